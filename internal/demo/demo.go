// Package demo is cdcflow's demo data: the employees table that `make run`
// replicates, and the one generator of changes to it that make run's demo
// writer, the tests and the benchmarks all use. cdcflow's own migrations
// never create it.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// Table is the demo table's schema-qualified name.
const Table = "public.employees"

// CreateTableSQL creates the demo table where it does not exist.
const CreateTableSQL = `CREATE TABLE IF NOT EXISTS public.employees (
    emp_id     integer PRIMARY KEY,
    first_name text,
    last_name  text,
    dob        date,
    city       text,
    salary     integer
)`

// Execer runs SQL: a connection, a pool or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// CreateTable creates the demo table in the database behind db.
func CreateTable(ctx context.Context, db Execer) error {
	if _, err := db.Exec(ctx, CreateTableSQL); err != nil {
		return fmt.Errorf("create %s: %w", Table, err)
	}
	return nil
}

// Employee is one row of the demo table.
type Employee struct {
	EmpID     int    `json:"emp_id"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	DOB       string `json:"dob"`
	City      string `json:"city"`
	Salary    int    `json:"salary"`
}

// String renders a row the way Snapshot reads it back.
func (e Employee) String() string {
	return fmt.Sprintf("%d|%s|%s|%s|%s|%d", e.EmpID, e.FirstName, e.LastName, e.DOB, e.City, e.Salary)
}

// CommitTime is the commit time of generated events: a fixed day, so that
// generated streams are reproducible.
var CommitTime = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// Event returns the change event op of row e, numbered actionID. A delete
// uses only e.EmpID.
func Event(actionID int64, op event.Op, e Employee) event.Event {
	ev := event.Event{
		ActionID:      actionID,
		Table:         Table,
		Op:            op,
		Key:           json.RawMessage(fmt.Sprintf(`{"emp_id":%d}`, e.EmpID)),
		CommitTime:    CommitTime,
		SchemaVersion: event.CurrentSchemaVersion,
	}
	if op != event.OpDelete {
		ev.After, _ = json.Marshal(e) // cannot fail: plain fields
	}
	return ev
}

var (
	firstNames = []string{"Ada", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Margaret"}
	cities     = []string{"Oslo", "Lima", "Pune", "Kyiv", "Rome", "Quito", "Accra", "Hanoi"}
)

// Generator makes a reproducible stream of changes over a range of keys, and
// knows the table they leave behind. Absent keys get inserts; present ones
// get updates (70%) or deletes (30%), so deletes and re-inserts of one key
// are common.
type Generator struct {
	rng   *rand.Rand
	keys  int
	first int // keys are first+1 .. first+keys
	next  int64
	state map[int]Employee
}

// NewGenerator returns a generator over emp_ids first+1..first+keys whose
// first event has action_id 1.
func NewGenerator(seed uint64, first, keys int) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(seed, 0)), keys: keys, first: first, next: 1, state: map[int]Employee{}}
}

// Next returns the next change.
func (g *Generator) Next() event.Event {
	i := g.next
	g.next++
	id := g.first + g.rng.IntN(g.keys) + 1
	_, exists := g.state[id]
	var ev event.Event
	switch {
	case exists && g.rng.IntN(10) < 3:
		delete(g.state, id)
		ev = Event(i, event.OpDelete, Employee{EmpID: id})
	default:
		row := Employee{EmpID: id, FirstName: firstNames[g.rng.IntN(len(firstNames))], LastName: fmt.Sprintf("L%d", i-1),
			DOB:  fmt.Sprintf("19%02d-%02d-%02d", 50+g.rng.IntN(50), 1+g.rng.IntN(12), 1+g.rng.IntN(28)),
			City: cities[g.rng.IntN(len(cities))], Salary: 1000 + g.rng.IntN(9000)}
		op := event.OpInsert
		if exists {
			op = event.OpUpdate
		}
		g.state[id] = row
		ev = Event(i, op, row)
	}
	ev.CommitTime = CommitTime.Add(time.Duration(i) * time.Millisecond)
	return ev
}

// Rows returns the table the changes so far leave behind, rendered as
// Snapshot reads it.
func (g *Generator) Rows() string { return Render(g.state) }

// Generate returns n changes over emp_ids 1..keys with action_ids 1..n, and
// the table they leave behind, rendered as Snapshot reads it.
func Generate(n, keys int, seed uint64) ([]event.Event, string) {
	g := NewGenerator(seed, 0, keys)
	events := make([]event.Event, n)
	for i := range events {
		events[i] = g.Next()
	}
	return events, g.Rows()
}

// Render lists rows as Snapshot does: one String per row, in key order.
func Render(rows map[int]Employee) string {
	ids := make([]int, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(rows[id].String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Snapshot reads the demo table the way Render writes rows.
func Snapshot(ctx context.Context, conn interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (string, error) {
	rows, err := conn.Query(ctx, `SELECT emp_id, first_name, last_name, dob::text, city, salary FROM public.employees ORDER BY emp_id`)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	var e Employee
	_, err = pgx.ForEachRow(rows, []any{&e.EmpID, &e.FirstName, &e.LastName, &e.DOB, &e.City, &e.Salary}, func() error {
		b.WriteString(e.String())
		b.WriteByte('\n')
		return nil
	})
	return b.String(), err
}

// Produce writes events to topic as capture would, and waits for every
// acknowledgement.
func Produce(ctx context.Context, brokers []string, topic string, events []event.Event) error {
	w := kafkax.NewWriter(brokers, topic, kafkax.WriterOptions{BatchSize: 1000})
	defer w.Close()
	const chunk = 5000
	for i := 0; i < len(events); i += chunk {
		msgs := make([]kafka.Message, 0, chunk)
		for _, ev := range events[i:min(i+chunk, len(events))] {
			value, err := event.Encode(ev)
			if err != nil {
				return err
			}
			msgs = append(msgs, kafkax.Message(ev, value))
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
	}
	return nil
}

// Statement returns the SQL that makes ev's change to the demo table on the
// source.
func Statement(ev event.Event) (string, []any, error) {
	var key struct {
		EmpID int `json:"emp_id"`
	}
	if err := json.Unmarshal(ev.Key, &key); err != nil {
		return "", nil, err
	}
	if ev.Op == event.OpDelete {
		return `DELETE FROM public.employees WHERE emp_id = $1`, []any{key.EmpID}, nil
	}
	var e Employee
	if err := json.Unmarshal(ev.After, &e); err != nil {
		return "", nil, err
	}
	args := []any{e.EmpID, e.FirstName, e.LastName, e.DOB, e.City, e.Salary}
	if ev.Op == event.OpInsert {
		return `INSERT INTO public.employees VALUES ($1, $2, $3, $4, $5, $6)`, args, nil
	}
	return `UPDATE public.employees SET first_name = $2, last_name = $3, dob = $4, city = $5, salary = $6 WHERE emp_id = $1`, args, nil
}

// Write keeps making the generator's changes on the source through conn, at
// about rate changes per second, until ctx ends. A failed statement is
// reported to onError and skipped.
func Write(ctx context.Context, conn Execer, g *Generator, rate int, onError func(error)) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sql, args, err := Statement(g.Next())
		if err == nil {
			_, err = conn.Exec(ctx, sql, args...)
		}
		if err != nil && ctx.Err() == nil {
			onError(err)
		}
	}
}
