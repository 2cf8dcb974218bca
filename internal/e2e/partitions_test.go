package e2e

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// TestStalledPartitionDoesNotDelayOthers: the destination row of every
// change on partition 0 stays locked, so that partition's batches retry and
// its in-flight slot stays taken; the changes on the other partitions are
// all applied meanwhile.
func TestStalledPartitionDoesNotDelayOthers(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	if _, err := p.dest.Exec(ctx, `INSERT INTO employees (emp_id, city) VALUES (1, 'Oslo')`); err != nil {
		t.Fatal(err)
	}
	lock, err := p.dest.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck
	if _, err := lock.Exec(ctx, `SELECT * FROM employees WHERE emp_id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	// emp_id 1 on partition 0; every other row on partitions 1 to 3.
	w := kafkax.NewWriter(p.brokers, p.topic, kafkax.WriterOptions{BatchSize: 1000})
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
		var key struct {
			EmpID int `json:"emp_id"`
		}
		_ = json.Unmarshal(m.Key[len(demo.Table)+1:], &key)
		if key.EmpID == 1 {
			return 0
		}
		return 1 + key.EmpID%3
	})
	defer w.Close()
	var msgs []kafka.Message
	add := func(ev event.Event) {
		value, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafkax.Message(ev, value))
	}
	id := int64(0)
	for i := range 100 {
		id++
		add(demo.Event(id, event.OpUpdate, demo.Employee{EmpID: 1, DOB: "1990-01-01", Salary: i}))
	}
	const others = 1200
	for i := range others {
		id++
		add(demo.Event(id, event.OpInsert, demo.Employee{EmpID: 2 + i, DOB: "1990-01-01", Salary: i}))
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	p.start("worker", "CDCFLOW_APPLY_LOCK_TIMEOUT=200ms")
	p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=10", "CDCFLOW_MAX_IN_FLIGHT=1")
	p.waitApplied(others)
	if n := p.count(`SELECT count(*) FROM employees WHERE emp_id > 1`); n != others {
		t.Fatalf("%d rows of the other partitions, want %d", n, others)
	}
	// Then the lock goes, and partition 0 catches up.
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitApplied(others + 100)
	if s := p.salary(1); s != 99 {
		t.Fatalf("emp 1 salary %d, want the last update's 99", s)
	}
}
