package applier

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Error types of permanent failures. They travel to Temporal as the type of a
// non-retryable application error, so they are part of cdcflow's interface:
// operators filter on them, and later dead-letter handling keys on them.
const (
	ErrTypeTableNotAllowed = "TableNotAllowed"
	ErrTypeUnknownColumn   = "UnknownColumn"
	ErrTypeKeyMismatch     = "KeyMismatch"
	ErrTypeInvalidValue    = "InvalidValue"
	ErrTypeConstraint      = "ConstraintViolation"
	ErrTypeSchema          = "SchemaMismatch"
	ErrTypeInvalidEvent    = "InvalidEvent"
)

// PermanentError is a failure that retrying cannot fix: the event or the
// destination schema must change first.
type PermanentError struct {
	Type     string
	ActionID int64 // the event at fault, when known
	Msg      string
	Err      error
}

func (e *PermanentError) Error() string {
	if e.ActionID != 0 {
		return fmt.Sprintf("action_id %d: %s", e.ActionID, e.Msg)
	}
	return e.Msg
}

func (e *PermanentError) Unwrap() error { return e.Err }

// classify turns a database error into a PermanentError when its SQLSTATE says
// that retrying cannot help, and leaves it as is (transient) otherwise.
// Connection failures, serialization failures (40001), deadlocks (40P01),
// shutdowns (57P01..57P03), cancellations and resource exhaustion stay
// transient, as does anything unrecognised: retrying a permanent error costs
// time, but dead-lettering a transient one would park good data.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	var typ string
	switch pgErr.Code[:2] {
	case "22":
		typ = ErrTypeInvalidValue
	case "23":
		typ = ErrTypeConstraint
	case "42":
		typ = ErrTypeSchema
	default:
		return err
	}
	msg := pgErr.Message
	if pgErr.Detail != "" {
		msg += " (" + pgErr.Detail + ")"
	}
	if pgErr.TableName != "" {
		msg = fmt.Sprintf("table %s: %s", pgErr.TableName, msg)
	}
	return &PermanentError{Type: typ, Msg: fmt.Sprintf("%s [SQLSTATE %s]", msg, pgErr.Code), Err: err}
}
