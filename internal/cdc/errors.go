package cdc

// ErrorClass says why a change could not be applied. Permanent classes cross
// the activity boundary as the type of a non-retryable application error and
// are recorded with every dead letter, so they are part of cdcflow's
// interface: operators filter on them (the CdcErrorClass search attribute,
// `dlq -class`), and metrics count by them. docs/operations.md has the
// SQLSTATE table.
type ErrorClass string

const (
	// ClassTransient is a failure that may pass on retry (destination down,
	// serialization failure, deadlock, lock timeout): retried until it
	// passes, never parked.
	ClassTransient ErrorClass = "Transient"

	ClassTableNotAllowed ErrorClass = "TableNotAllowed"     // table not on the allowlist
	ClassKeyMismatch     ErrorClass = "KeyMismatch"         // key columns are not the primary key, or the image names another row
	ClassInvalidValue    ErrorClass = "InvalidValue"        // SQLSTATE class 22: a value the column cannot hold
	ClassConstraint      ErrorClass = "ConstraintViolation" // SQLSTATE class 23 but for the two below: a CHECK, NOT NULL, exclusion
	ClassSchema          ErrorClass = "SchemaMismatch"      // SQLSTATE class 42 but for the two below, 0A000; a table without a primary key
	ClassRejected        ErrorClass = "DestinationRejected" // any other SQLSTATE that is not transient: P0001 from a trigger, 21000, 54000 ...
	ClassInvalidEvent    ErrorClass = "InvalidEvent"        // the message is not a valid change event, or a large change's chunks do not match its manifest
	// ClassChangeTooLarge: a row image of the change exceeded capture's
	// limit (CDCFLOW_MAX_CHANGE_BYTES); the change was not published, its
	// outbox row is kept in the source's cdcflow.oversized_changes.
	ClassChangeTooLarge ErrorClass = "ChangeTooLarge"
	// ClassClaimExpired: the chunks of a large change are no longer in the
	// change topic (retention deleted them before the change was applied).
	ClassClaimExpired ErrorClass = "ClaimExpired"
	// ClassTruncate: the source truncated the table. cdcflow does not
	// empty a destination table on its own; a person does, and discards it.
	ClassTruncate ErrorClass = "Truncate"
	// ClassBatchFailed: the change's batch workflow closed without
	// completing again and again (see cdc.BatchInput.ParkReason).
	ClassBatchFailed ErrorClass = "BatchFailed"

	// Ordering-dependent classes: failures that a change arriving later (on
	// another partition) or a destination migration under way can make pass.
	// They are retried for BatchInput.OrderingWindow before being parked.
	ClassForeignKey      ErrorClass = "ForeignKeyViolation" // 23503: the referenced row has not arrived yet
	ClassUniqueViolation ErrorClass = "UniqueViolation"     // 23505: the row holding the value has not moved yet
	ClassUndefinedTable  ErrorClass = "UndefinedTable"      // 42P01, or the destination table does not exist yet
	ClassUnknownColumn   ErrorClass = "UnknownColumn"       // 42703, or the destination table lacks a column yet
)

// ErrorClasses lists every class, for metrics to start each series at 0.
var ErrorClasses = []ErrorClass{ClassTransient, ClassTableNotAllowed, ClassKeyMismatch, ClassInvalidValue, ClassConstraint,
	ClassSchema, ClassRejected, ClassInvalidEvent, ClassChangeTooLarge, ClassClaimExpired, ClassTruncate, ClassBatchFailed,
	ClassForeignKey, ClassUniqueViolation, ClassUndefinedTable, ClassUnknownColumn}

// Final reports whether trying a change failing with c again cannot help:
// such a change is parked at once.
func (c ErrorClass) Final() bool {
	switch c {
	case ClassInvalidEvent, ClassChangeTooLarge, ClassClaimExpired, ClassTruncate:
		return true
	}
	return false
}

// OrderingDependent reports whether a later change, a destination
// migration or a configuration change rolling out (a table added to the
// allowlist of capture before the worker's) may make a change failing with c
// pass.
func (c ErrorClass) OrderingDependent() bool {
	switch c {
	case ClassForeignKey, ClassUniqueViolation, ClassUndefinedTable, ClassUnknownColumn, ClassTableNotAllowed:
		return true
	}
	return false
}
