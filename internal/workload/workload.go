// Package workload makes reproducible streams of changes to the demo
// employees table, with the final state they must leave behind. Tests and
// benchmarks use it; so does `make run`'s demo writer.
package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
)

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

var (
	firstNames = []string{"Ada", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Margaret"}
	cities     = []string{"Oslo", "Lima", "Pune", "Kyiv", "Rome", "Quito", "Accra", "Hanoi"}
)

// Generate returns n changes over keys emp_ids with action_ids 1..n, and the
// final table they produce. Absent keys get inserts; present ones get updates
// (70%) or deletes (30%), so deletes and re-inserts of one key are common.
func Generate(n, keys int, seed uint64) ([]event.Event, map[int]Employee) {
	rng := rand.New(rand.NewPCG(seed, 0))
	state := map[int]Employee{}
	events := make([]event.Event, 0, n)
	start := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	for i := range n {
		id := rng.IntN(keys) + 1
		ev := event.Event{
			ActionID:      int64(i + 1),
			Table:         "public.employees",
			Key:           json.RawMessage(fmt.Sprintf(`{"emp_id":%d}`, id)),
			CommitTime:    start.Add(time.Duration(i) * time.Millisecond),
			SchemaVersion: event.CurrentSchemaVersion,
		}
		_, exists := state[id]
		switch {
		case exists && rng.IntN(10) < 3:
			ev.Op = event.OpDelete
			delete(state, id)
		default:
			ev.Op = event.OpInsert
			if exists {
				ev.Op = event.OpUpdate
			}
			row := Employee{EmpID: id, FirstName: firstNames[rng.IntN(len(firstNames))], LastName: fmt.Sprintf("L%d", i),
				DOB:  fmt.Sprintf("19%02d-%02d-%02d", 50+rng.IntN(50), 1+rng.IntN(12), 1+rng.IntN(28)),
				City: cities[rng.IntN(len(cities))], Salary: 1000 + rng.IntN(9000)}
			ev.After, _ = json.Marshal(row)
			state[id] = row
		}
		events = append(events, ev)
	}
	return events, state
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

// Snapshot reads the employees table the way Render writes rows.
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

// Produce writes events to topic keyed by table and primary key, so that all
// changes of a row share a partition, and waits for every acknowledgement.
func Produce(ctx context.Context, brokers []string, topic string, events []event.Event) error {
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    1000,
		BatchBytes:   event.MaxEventBytes + 64<<10, // below the topic's max.message.bytes (2 MiB)
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	const chunk = 5000
	for i := 0; i < len(events); i += chunk {
		msgs := make([]kafka.Message, 0, chunk)
		for _, ev := range events[i:min(i+chunk, len(events))] {
			value, err := event.Encode(ev)
			if err != nil {
				return err
			}
			msgs = append(msgs, kafka.Message{Key: append([]byte(ev.Table+":"), ev.Key...), Value: value})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
	}
	return nil
}

// Statement returns the SQL that makes ev's change to the employees table.
func Statement(ev event.Event) (string, []any, error) {
	var key struct {
		EmpID int `json:"emp_id"`
	}
	if err := json.Unmarshal(ev.Key, &key); err != nil {
		return "", nil, err
	}
	if ev.Op == event.OpDelete {
		return `DELETE FROM employees WHERE emp_id = $1`, []any{key.EmpID}, nil
	}
	var e Employee
	if err := json.Unmarshal(ev.After, &e); err != nil {
		return "", nil, err
	}
	args := []any{e.EmpID, e.FirstName, e.LastName, e.DOB, e.City, e.Salary}
	if ev.Op == event.OpInsert {
		return `INSERT INTO employees VALUES ($1, $2, $3, $4, $5, $6)`, args, nil
	}
	return `UPDATE employees SET first_name = $2, last_name = $3, dob = $4, city = $5, salary = $6 WHERE emp_id = $1`, args, nil
}

// Shift returns copies of events on other keys (emp_id + keyOffset), so that
// a second run does not touch the rows of the first.
func Shift(events []event.Event, keyOffset int) []event.Event {
	out := make([]event.Event, len(events))
	for i, ev := range events {
		var key struct {
			EmpID int `json:"emp_id"`
		}
		_ = json.Unmarshal(ev.Key, &key)
		ev.Key = json.RawMessage(fmt.Sprintf(`{"emp_id":%d}`, key.EmpID+keyOffset))
		if ev.After != nil {
			var e Employee
			_ = json.Unmarshal(ev.After, &e)
			e.EmpID += keyOffset
			ev.After, _ = json.Marshal(e)
		}
		out[i] = ev
	}
	return out
}
