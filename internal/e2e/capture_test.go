package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestSourceToDestination: 20,000 changes from 8 concurrent writers over
// 1,000 keys — upserts, deletes, re-inserts and primary-key updates, one to
// four per transaction — end with the destination equal to the source.
func TestSourceToDestination(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	p.start("capture")
	waitTable(t, p.source, "employees")
	sourceToDestination(t, p)
}

// TestSourceToDestinationFromTheLog: the same, captured from the
// write-ahead log through a replication slot.
func TestSourceToDestinationFromTheLog(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	var slot string
	if err := p.source.QueryRow(context.Background(), `SELECT current_database()`).Scan(&slot); err != nil {
		t.Fatal(err)
	}
	testenv.DropSlotAtCleanup(t, p.source, slot) // after capture stops
	p.start("capture", "CDCFLOW_CAPTURE_MODE=logical", "CDCFLOW_SLOT="+slot)
	p.waitSlot(slot)
	sourceToDestination(t, p)
}

// waitSlot waits until capture has created its replication slot: only what
// commits after that is in the log it reads.
func (p *pipeline) waitSlot(slot string) {
	p.t.Helper()
	eventually(p.t, time.Minute, "the replication slot", func() (bool, string) {
		var n int
		err := p.source.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n)
		return err == nil && n == 1, fmt.Sprint("no slot yet ", err)
	})
}

func sourceToDestination(t *testing.T, p *pipeline) {
	p.start("worker")
	p.start("starter")

	const writers, changes, keys = 8, 20000, 1000
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			ctx := context.Background()
			for done.Load() < changes {
				n, err := writeTx(ctx, p.source, rng, keys)
				if err != nil {
					errs <- err
					return
				}
				done.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var captured int
	p.waitSame("public.employees", "emp_id", 3*time.Minute)
	if err := p.dest.QueryRow(context.Background(), `SELECT count(*) FROM cdcflow.processed_events`).Scan(&captured); err != nil {
		t.Fatal(err)
	}
	if captured < changes {
		t.Fatalf("%d changes applied, want at least %d", captured, changes)
	}
	// Per row, Kafka holds the changes in action_id order.
	events := 0
	for part, evs := range p.readTopic(func(evs []event.Event) bool { return len(evs) >= captured }) {
		last := map[string]int64{}
		for _, ev := range evs {
			events++
			if ev.ActionID <= last[string(ev.Key)] {
				t.Fatalf("partition %d: key %s has action_id %d after %d", part, ev.Key, ev.ActionID, last[string(ev.Key)])
			}
			last[string(ev.Key)] = ev.ActionID
		}
	}
	t.Logf("%d committed changes applied; %d events in Kafka, in action_id order per row", captured, events)
}

// readTopic reads the topic until want holds for the events read so far,
// and returns them by partition, in offset order.
func (p *pipeline) readTopic(want func([]event.Event) bool) [][]event.Event {
	p.t.Helper()
	var events []event.Event
	byPartition := make([][]event.Event, partitions)
	offsets := make([]int64, partitions)
	eventually(p.t, 2*time.Minute, "the topic to hold every change", func() (bool, string) {
		for part := range partitions {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: p.topic, Partition: part, MaxWait: 50 * time.Millisecond})
			if err := r.SetOffset(offsets[part]); err != nil {
				p.t.Fatal(err)
			}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				m, err := r.ReadMessage(ctx)
				cancel()
				if err != nil {
					break
				}
				ev, err := event.Decode(m.Value)
				if err != nil {
					p.t.Fatalf("capture published an undecodable event: %v", err)
				}
				events = append(events, ev)
				byPartition[part] = append(byPartition[part], ev)
				offsets[part] = m.Offset + 1
			}
			r.Close()
		}
		return want(events), fmt.Sprint(len(events), " events")
	})
	return byPartition
}

// TestConcurrentCommitsOutOfOrder: 16 writers insert rows, each holding its
// transaction open for a random while, so action_ids commit out of order.
// Every committed change must reach Kafka.
func TestConcurrentCommitsOutOfOrder(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	if _, err := p.source.Exec(ctx, `CREATE TABLE public.orders (id int PRIMARY KEY, writer int)`); err != nil {
		t.Fatal(err)
	}
	p.start("capture", "CDCFLOW_TABLES=public.orders", "CDCFLOW_CAPTURE_POLL=5ms")
	waitTable(t, p.source, "orders")

	const writers, perWriter = 16, 60
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range perWriter {
				tx, err := p.source.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := tx.Exec(ctx, `INSERT INTO orders VALUES ($1, $2)`, w*perWriter+i, w); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond) // commit later than others that began after
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	byPartition := p.readTopic(func(evs []event.Event) bool {
		clear(seen)
		for _, ev := range evs {
			seen[string(ev.Key)] = true
		}
		return len(seen) == writers*perWriter
	})
	// How often a lower action_id followed a higher one in a partition: the
	// events a high-water mark would have skipped.
	late := 0
	for _, evs := range byPartition {
		var high int64
		for _, ev := range evs {
			if ev.ActionID < high {
				late++
			}
			high = max(high, ev.ActionID)
		}
	}
	t.Logf("%d events; %d published after a higher action_id of their partition", len(seen), late)
	for i := range writers * perWriter {
		if !seen[fmt.Sprintf(`{"id":%d}`, i)] {
			t.Fatalf("insert of id %d never reached Kafka", i)
		}
	}
}

// TestCaptureKilledAfterPublish kills capture (SIGKILL) while Kafka takes its
// produce request, so the events are in Kafka but not deleted from the
// outbox. The restarted capture publishes them again: duplicates, no loss.
func TestCaptureKilledAfterPublish(t *testing.T) {
	p := newPipeline(t)
	if p.kafka == nil {
		t.Skip("needs the in-process broker to intercept the produce request")
	}
	p.withSource()
	var capture atomic.Pointer[proc]
	var produces atomic.Int32
	killed := make(chan struct{})
	cluster := p.kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := capture.Load()
		if produces.Add(1) < 6 || pr == nil {
			cluster.KeepControl()
			return nil, nil, false
		}
		cluster.DropControl()
		pr.Kill()
		close(killed)
		return nil, nil, false // the broker still appends the records
	})
	capture.Store(p.start("capture", "CDCFLOW_CAPTURE_BATCH=200"))
	p.start("worker")
	p.start("starter")
	waitTable(t, p.source, "employees")

	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 3))
	for range 3000 {
		if _, err := writeTx(ctx, p.source, rng, 300); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-killed:
	case <-time.After(time.Minute):
		t.Fatal("capture was never killed")
	}
	p.start("capture", "CDCFLOW_CAPTURE_BATCH=200")
	p.waitSame("public.employees", "emp_id", 2*time.Minute)

	var applied int
	if err := p.dest.QueryRow(ctx, `SELECT count(*) FROM cdcflow.processed_events`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	total, ids := 0, map[int64]int{}
	for _, evs := range p.readTopic(func([]event.Event) bool { return true }) {
		for _, ev := range evs {
			ids[ev.ActionID]++
			total++
		}
	}
	if len(ids) != applied {
		t.Fatalf("%d distinct action_ids in Kafka, %d applied", len(ids), applied)
	}
	if total == len(ids) {
		t.Fatalf("no event was published twice: the kill did not land between Kafka's ack and the outbox delete")
	}
	t.Logf("%d events in Kafka, %d distinct, all applied once", total, len(ids))
}
