package applier

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// PermanentError is a failure that retrying cannot fix: the event or the
// destination schema must change first.
type PermanentError struct {
	ErrorClass cdc.ErrorClass
	ActionID   int64 // the event at fault, when known
	Msg        string
	Err        error
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
	var class cdc.ErrorClass
	switch pgErr.Code[:2] {
	case "22":
		class = cdc.ClassInvalidValue
	case "23":
		class = cdc.ClassConstraint
	case "42":
		class = cdc.ClassSchema
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
	return &PermanentError{ErrorClass: class, Msg: fmt.Sprintf("%s [SQLSTATE %s]", msg, pgErr.Code), Err: err}
}
