package applier

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// TestSQLSTATETable: the class of every kind of destination error, as
// docs/operations.md lists them.
func TestSQLSTATETable(t *testing.T) {
	got := map[string]cdc.ErrorClass{}
	for _, code := range []string{
		"08006", "25P02", "40001", "40P01", "53100", "55P03", "57014", "57P01", "58030", // transient
		"22P02", "22001", "23502", "23514", "23P01", "42601", "42804", "0A000", // permanent, by class
		"23503", "23505", "42P01", "42703", // ordering-dependent
		"P0001", "21000", "54000", "2F005", "XX000", // anything else
	} {
		err := classify(&pgconn.PgError{Code: code, Message: "m"})
		var perm *PermanentError
		if errors.As(err, &perm) {
			got[code] = perm.ErrorClass
		} else {
			got[code] = cdc.ClassTransient
		}
	}
	want := map[string]cdc.ErrorClass{
		"08006": cdc.ClassTransient, "25P02": cdc.ClassTransient, "40001": cdc.ClassTransient, "40P01": cdc.ClassTransient,
		"53100": cdc.ClassTransient, "55P03": cdc.ClassTransient, "57014": cdc.ClassTransient, "57P01": cdc.ClassTransient,
		"58030": cdc.ClassTransient,
		"22P02": cdc.ClassInvalidValue, "22001": cdc.ClassInvalidValue,
		"23502": cdc.ClassConstraint, "23514": cdc.ClassConstraint, "23P01": cdc.ClassConstraint,
		"42601": cdc.ClassSchema, "42804": cdc.ClassSchema, "0A000": cdc.ClassSchema,
		"23503": cdc.ClassForeignKey, "23505": cdc.ClassUniqueViolation, "42P01": cdc.ClassUndefinedTable, "42703": cdc.ClassUnknownColumn,
		"P0001": cdc.ClassRejected, "21000": cdc.ClassRejected, "54000": cdc.ClassRejected, "2F005": cdc.ClassRejected,
		"XX000": cdc.ClassRejected,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("classes (-want +got):\n%s", diff)
	}
	for code, class := range want {
		if ordering := class.OrderingDependent(); ordering != (code == "23503" || code == "23505" || code == "42P01" || code == "42703") {
			t.Errorf("%s (%s): ordering-dependent %v", code, class, ordering)
		}
	}
}
