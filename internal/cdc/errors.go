package cdc

// ErrorClass says why a change could not be applied. Permanent classes cross
// the activity boundary as the type of a non-retryable application error and
// are recorded with every dead letter, so they are part of cdcflow's
// interface: operators filter on them (the CdcErrorClass search attribute,
// `dlq -class`), and metrics count by them.
type ErrorClass string

const (
	// ClassTransient is a failure that may pass on retry (destination down,
	// serialization failure, deadlock): retried, never parked.
	ClassTransient ErrorClass = "Transient"

	ClassTableNotAllowed ErrorClass = "TableNotAllowed"     // table not on the allowlist
	ClassUnknownColumn   ErrorClass = "UnknownColumn"       // the destination table lacks a column
	ClassKeyMismatch     ErrorClass = "KeyMismatch"         // key columns are not the primary key
	ClassInvalidValue    ErrorClass = "InvalidValue"        // SQLSTATE class 22
	ClassConstraint      ErrorClass = "ConstraintViolation" // SQLSTATE class 23
	ClassSchema          ErrorClass = "SchemaMismatch"      // SQLSTATE class 42, missing table or key
	ClassInvalidEvent    ErrorClass = "InvalidEvent"        // the message is not a valid change event
	// ClassBatchFailed: the change's batch workflow closed without
	// completing again and again (see cdc.BatchInput.ParkReason).
	ClassBatchFailed ErrorClass = "BatchFailed"
)
