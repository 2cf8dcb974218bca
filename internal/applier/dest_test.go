package applier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// dest is a migrated destination database with an applier on it.
type dest struct {
	pool *pgxpool.Pool
	apl  *applier.Applier
}

func newDest(t *testing.T, tables ...string) *dest {
	t.Helper()
	pool, apl := testenv.NewDestination(t, applier.DefaultTimeouts, tables...)
	return &dest{pool: pool, apl: apl}
}

func (d *dest) exec(t *testing.T, sql string) {
	t.Helper()
	if _, err := d.pool.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (d *dest) apply(t *testing.T, evs ...event.Event) cdc.Counts {
	t.Helper()
	res, err := d.apl.Apply(context.Background(), evs)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

// rows returns employees as "id:first:city:salary" lines in key order.
func (d *dest) rows(t *testing.T) string {
	t.Helper()
	rows, err := d.pool.Query(context.Background(),
		`SELECT emp_id, coalesce(first_name, 'NULL'), coalesce(city, 'NULL'), coalesce(salary::text, 'NULL'), coalesce(dob::text, 'NULL') FROM employees ORDER BY emp_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var first, city, salary, dob string
		if err := rows.Scan(&id, &first, &city, &salary, &dob); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s:%s:%s:%s", id, first, city, salary, dob))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func (d *dest) count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	if err := d.pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

var commit = demo.CommitTime

// emp is the change event op, numbered id, of the demo row empID; a delete
// uses only empID.
func emp(id int64, op event.Op, empID int, first, city string, salary int) event.Event {
	return demo.Event(id, op, demo.Employee{EmpID: empID, FirstName: first, LastName: "L", DOB: "1990-01-02", City: city, Salary: salary})
}

func withAfter(ev event.Event, after string) event.Event {
	ev.After = json.RawMessage(after)
	return ev
}

func withKey(ev event.Event, key string) event.Event {
	ev.Key = json.RawMessage(key)
	return ev
}
