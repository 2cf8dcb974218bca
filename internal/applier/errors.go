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

// classify turns a database error into a PermanentError of its class when
// its SQLSTATE says that retrying the same statement soon cannot help, and
// leaves it as is (transient) otherwise. Transient are the connection
// (08), transaction state (25), rollback (40: serialization failures,
// deadlocks), resource (53), object state (55: lock timeouts), operator
// intervention (57: cancellations, shutdowns) and system (58) classes, and
// errors that are not PostgreSQL's at all (the network). Every other
// SQLSTATE is permanent: retried MaxAttempts times, or, for an
// ordering-dependent class, for the ordering window, then parked.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	class, transient := sqlstateClass(pgErr.Code)
	if transient {
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

// sqlstateClass is the SQLSTATE table of docs/operations.md.
func sqlstateClass(code string) (class cdc.ErrorClass, transient bool) {
	switch code {
	case "23503":
		return cdc.ClassForeignKey, false
	case "23505":
		return cdc.ClassUniqueViolation, false
	case "42P01":
		return cdc.ClassUndefinedTable, false
	case "42703":
		return cdc.ClassUnknownColumn, false
	case "0A000":
		return cdc.ClassSchema, false
	}
	if len(code) < 2 {
		return cdc.ClassRejected, false
	}
	switch code[:2] {
	case "08", "25", "40", "53", "55", "57", "58":
		return cdc.ClassTransient, true
	case "22":
		return cdc.ClassInvalidValue, false
	case "23":
		return cdc.ClassConstraint, false
	case "42":
		return cdc.ClassSchema, false
	}
	return cdc.ClassRejected, false
}
