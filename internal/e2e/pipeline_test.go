package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
)

func (p *pipeline) produce(n, keys int, seed uint64) string {
	p.t.Helper()
	events, final := demo.Generate(n, keys, seed)
	if err := demo.Produce(context.Background(), p.brokers, p.topic, events); err != nil {
		p.t.Fatal(err)
	}
	return final
}

func (p *pipeline) assertDestination(want string) {
	p.t.Helper()
	got := p.snapshot()
	if got == want {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < min(len(gl), len(wl)); i++ {
		if gl[i] != wl[i] {
			p.t.Fatalf("destination differs from the expected state at row %d: got %q, want %q (%d rows, want %d)",
				i, gl[i], wl[i], len(gl)-1, len(wl)-1)
		}
	}
	p.t.Fatalf("destination has %d rows, want %d", len(gl)-1, len(wl)-1)
}

// TestPipelineAppliesChangesAndAbsorbsRedelivery covers the mixed workload
// (a) and a full redelivery after the group was reset to earliest (b).
func TestPipelineAppliesChangesAndAbsorbsRedelivery(t *testing.T) {
	const n = 10000
	p := newPipeline(t)
	p.start("worker")
	starter := p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=500")
	want := p.produce(n, 500, 1)

	// (a) Every change arrives once and the destination equals the source's final state.
	p.waitApplied(n)
	p.assertDestination(want)
	first := p.summaries(n)
	tot := total(first)
	if tot.Applied+tot.Superseded != n || tot.Duplicates != 0 || tot.Failed != 0 {
		t.Fatalf("batch summaries add up to %+v, want %d applied or superseded", tot, n)
	}
	used := map[string]bool{}
	for id := range first {
		parts := strings.Split(strings.TrimPrefix(id, "cdc-"+p.topic+"-"), "-")
		used[parts[0]] = true
	}
	if len(used) != partitions {
		t.Fatalf("batches came from partitions %v, want all %d", used, partitions)
	}
	versions := p.count(`SELECT count(*) FROM cdcflow.row_versions`)

	// (b) Reset the group to earliest: all 10,000 events are delivered again.
	eventually(t, time.Minute, "all offsets committed", func() (bool, string) {
		c := p.committed()
		return c == n, fmt.Sprint(c)
	})
	starter.stop(t)
	p.resetGroup()
	// Other batch boundaries than before, so most batches are new workflows.
	again := p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=700")
	eventually(t, 2*time.Minute, "all offsets committed again", func() (bool, string) {
		c := p.committed()
		return c == n, fmt.Sprint(c)
	})
	again.stop(t)
	out := again.out.String()
	if got := logValue(t, out, "starter stopped", "messages"); got != n {
		t.Fatalf("redelivery passed %d messages, want %d", got, n)
	}
	// Batches whose workflow ID was used before were not started again.
	existing := logValue(t, out, "starter stopped", "redelivered")

	all := p.summaries(2*n - existing)
	second := map[string]cdc.BatchSummary{}
	for id, s := range all {
		if _, ok := first[id]; !ok {
			second[id] = s
		}
	}
	tot = total(second)
	if tot.Applied != 0 || tot.Superseded != 0 || tot.Failed != 0 {
		t.Fatalf("redelivered batches changed something: %+v", tot)
	}
	if tot.Duplicates+existing != n {
		t.Fatalf("%d duplicates counted by %d new workflows + %d skipped by workflow ID, want %d",
			tot.Duplicates, len(second), existing, n)
	}
	t.Logf("redelivery: %d duplicates in %d new workflows, %d events in batches skipped by workflow ID", tot.Duplicates, len(second), existing)
	p.assertDestination(want)
	if got := p.count(`SELECT count(*) FROM cdcflow.processed_events`); got != n {
		t.Fatalf("%d processed events after redelivery, want %d", got, n)
	}
	if got := p.count(`SELECT count(*) FROM cdcflow.row_versions`); got != versions {
		t.Fatalf("%d row versions after redelivery, want %d", got, versions)
	}
}

// TestStarterKilledBetweenStartAndCommit kills the starter process (SIGKILL)
// at the moment it asks Kafka to commit the offsets of a batch whose workflow
// Temporal has accepted (c).
func TestStarterKilledBetweenStartAndCommit(t *testing.T) {
	const n = 3000
	p := newPipeline(t)
	if p.kafka == nil {
		t.Skip("needs the in-process broker to intercept the offset commit")
	}
	// All changes are in Kafka first, so batches are cut by count alone and the
	// restarted starter cuts the same ones.
	want := p.produce(n, 300, 2)
	env := []string{"CDCFLOW_BATCH_MAX_EVENTS=400", "CDCFLOW_BATCH_MAX_WAIT=3s", "CDCFLOW_KAFKA_SESSION_TIMEOUT=6s"}

	var starter atomic.Pointer[proc]
	var commits atomic.Int32
	killed := make(chan string, 1)
	cluster := p.kafka.Cluster()
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		switch n := commits.Add(1); {
		case n < 3:
			cluster.KeepControl()
			return nil, nil, false // let the first two commits through
		case n > 3:
			cluster.DropControl()
			return nil, nil, false
		}
		cluster.DropControl()
		r := req.(*kmsg.OffsetCommitRequest)
		pr := starter.Load()
		pr.Kill()
		killed <- fmt.Sprintf("partition %d offset %d", r.Topics[0].Partitions[0].Partition, r.Topics[0].Partitions[0].Offset)
		return nil, errors.New("starter killed before its commit landed"), true
	})
	p.start("worker")
	starter.Store(p.start("starter", env...))
	var at string
	select {
	case at = <-killed:
	case <-time.After(2 * time.Minute):
		t.Fatal("the starter never committed a third time")
	}
	t.Logf("killed the starter while it committed %s", at)

	restarted := p.start("starter", env...)
	p.waitApplied(n)
	eventually(t, 2*time.Minute, "all offsets committed", func() (bool, string) {
		c := p.committed()
		return c == n, fmt.Sprint(c)
	})
	restarted.stop(t)
	existing := logValue(t, restarted.out.String(), "starter stopped", "redelivered")
	if existing == 0 {
		t.Fatalf("the restarted starter found no batch started before the kill:\n%s", restarted.out.String())
	}

	p.assertDestination(want)
	tot := total(p.summaries(n))
	if tot.Events != n || tot.Applied+tot.Superseded != n || tot.Duplicates != 0 {
		t.Fatalf("batch summaries add up to %+v: want every one of %d events applied exactly once", tot, n)
	}
	if got := p.count(`SELECT count(*) FROM cdcflow.processed_events`); got != n {
		t.Fatalf("%d processed events, want %d", got, n)
	}
}
