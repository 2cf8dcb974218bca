package poller_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/poller"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// runPoller runs a poller until the test ends, and returns it and a
// context that ends then.
func runPoller(t *testing.T, cfg poller.Config, tc client.Client) (context.Context, *poller.Poller) {
	t.Helper()
	p := poller.New(cfg, tc, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ctx, p
}

// TestChunkRunsStayWithTheirManifest: against the in-process broker and a
// Temporal dev server (no worker: the batches' inputs are read from their
// histories), a count cut that falls inside a run of chunks goes before the
// run, and so does the committed offset; the run goes with its manifest to
// the next batch, which claims its chunks. Chunks of an abandoned attempt
// are skipped and counted, and a manifest without its chunks is poison.
func TestChunkRunsStayWithTheirManifest(t *testing.T) {
	const topic = "changes"
	brokers, _ := testenv.NewKafka(t, map[string]int32{topic: 1})
	tc := testenv.Dial(t, testenv.TemporalServer(t))
	suffix := fmt.Sprint(time.Now().UnixNano())
	cfg := poller.Config{Conn: kafkax.Conn{Brokers: brokers, Topic: topic}, GroupID: "g-" + suffix, TaskQueue: "q-" + suffix,
		MaxEvents: 3, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxInFlight: 10, SessionTimeout: 6 * time.Second, MaxAttempts: 3,
		OrderingWindow: time.Minute}
	// Large changes of about 1.2 MiB: two do not fit one batch.
	saved := poller.MaxWholeBytes
	t.Cleanup(func() { poller.MaxWholeBytes = saved }) // after the poller stopped
	poller.MaxWholeBytes = 2 << 20
	ctx, p := runPoller(t, cfg, tc)

	w := kafkax.NewWriter(brokers, topic, kafkax.WriterOptions{})
	defer w.Close()
	write := func(msgs ...kafka.Message) {
		t.Helper()
		for _, m := range msgs { // one at a time: the order is the point
			if err := w.WriteMessages(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	small := func(id int64) kafka.Message {
		ev := demo.Event(id, event.OpInsert, demo.Employee{EmpID: int(id), FirstName: "Ada"})
		v, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		return kafkax.Message(ev, v)
	}
	large := func(id int64) ([]kafka.Message, kafka.Message) {
		ev := demo.Event(id, event.OpInsert, demo.Employee{EmpID: int(id), FirstName: strings.Repeat("n", 1200<<10)})
		v, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		chunks, manifest, err := kafkax.Messages(ev, v)
		if err != nil || len(chunks) != 3 {
			t.Fatalf("%d chunks, %v", len(chunks), err)
		}
		return chunks, manifest
	}
	committed := func() int64 {
		c := &kafka.Client{Addr: kafka.TCP(brokers...)}
		resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.GroupID, Topics: map[string][]int{topic: {0}}})
		if err != nil || len(resp.Topics[topic]) == 0 {
			return -1
		}
		return resp.Topics[topic][0].CommittedOffset
	}
	waitCommitted := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for committed() != want {
			if time.Now().After(deadline) {
				t.Fatalf("committed offset %d, want %d", committed(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	started := func(first, last int64) (cdc.BatchInput, []int64) {
		t.Helper()
		// The ID ends in a digest of the batch's messages.
		prefix := cdc.BatchWorkflowID(topic, 0, first, last, "")
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowId STARTS_WITH '%s'", prefix)})
		if err != nil || len(resp.Executions) != 1 {
			t.Fatalf("batch %s*: %v, %v", prefix, resp, err)
		}
		id := resp.Executions[0].Execution.WorkflowId
		iter := tc.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		ev, err := iter.Next()
		if err != nil {
			t.Fatalf("batch %s: %v", id, err)
		}
		var in cdc.BatchInput
		var batch event.Batch
		if err := temporalx.DataConverter().FromPayloads(ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in, &batch); err != nil {
			t.Fatal(err)
		}
		events, err := batch.Decode()
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]int64, len(events))
		for i, e := range events {
			ids[i] = e.ActionID
		}
		return in, ids
	}
	check := func(in cdc.BatchInput, ids []int64, wantIDs []int64, want cdc.BatchInput) {
		t.Helper()
		want.Topic, want.MaxAttempts, want.OrderingWindowSeconds = topic, 3, 60
		for i := range in.Poison {
			in.Poison[i].Value = nil
			if !strings.Contains(in.Poison[i].Error, want.Poison[i].Error) {
				t.Errorf("poison %d: %q, want it to contain %q", i, in.Poison[i].Error, want.Poison[i].Error)
			}
			in.Poison[i].Error = want.Poison[i].Error
		}
		if diff := cmp.Diff(want, in); diff != "" {
			t.Fatalf("batch input (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantIDs, ids); diff != "" {
			t.Fatalf("action_ids of the batch (-want +got):\n%s", diff)
		}
	}

	// Offsets 0..4: two events, two of the three chunks of action 3, and an
	// event that makes three: the count cut goes before the run.
	chunksA, manifestA := large(3)
	write(small(1), small(2), chunksA[0], chunksA[1], small(4))
	waitCommitted(2)
	in, ids := started(0, 1)
	check(in, ids, []int64{1, 2}, cdc.BatchInput{FirstOffset: 0, LastOffset: 1, EventCount: 2, Offsets: []int64{0, 1}})
	time.Sleep(time.Second)
	if c := committed(); c != 2 {
		t.Fatalf("committed %d while the run is open, want 2", c)
	}

	// Offsets 5..7: the last chunk, the manifest, an event: the run went
	// with its manifest.
	write(chunksA[2], manifestA, small(5))
	waitCommitted(8)
	in, ids = started(2, 7)
	check(in, ids, []int64{4, 3, 5}, cdc.BatchInput{FirstOffset: 2, LastOffset: 7, EventCount: 3, Offsets: []int64{4, 6, 7},
		Claims: []cdc.Claim{{Index: 1, Offsets: []int64{2, 3, 5}}}})

	// Offsets 8..14: the first chunk of an attempt that died, the whole run
	// again, its manifest, a manifest whose chunks never came, an event.
	chunksB, manifestB := large(6)
	_, manifestC := large(7)
	write(chunksB[0])
	write(chunksB...)
	write(manifestB, manifestC, small(8))
	waitCommitted(15)
	in, ids = started(8, 14)
	c, err := event.Decode(manifestC.Value)
	if err != nil {
		t.Fatal(err)
	}
	check(in, ids, []int64{6, 8}, cdc.BatchInput{FirstOffset: 8, LastOffset: 14, EventCount: 2, Offsets: []int64{12, 14},
		Claims: []cdc.Claim{{Index: 0, Offsets: []int64{9, 10, 11}}},
		Poison: []cdc.Poison{{Offset: 13, Size: len(manifestC.Value),
			Error: "manifest of action_id 7: its 3 chunks (sha256 " + c.Chunks.SHA256 +
				") are not in the batch: no complete run of them was read before offset 13"}}})
	if got := [3]int64{p.Stats.BatchesStarted.Load(), p.Stats.OrphanChunks.Load(), p.Stats.Poison.Load()}; got != [3]int64{3, 1, 1} {
		t.Fatalf("batches started, orphan chunks, poison: %v, want [3 1 1]", got)
	}

	// Offsets 15..24: two large changes whose full size passes
	// MaxWholeBytes together, then two events: the batch is cut before the
	// second large change's run, although its manifests are small.
	chunksD, manifestD := large(9)
	chunksE, manifestE := large(10)
	write(append(chunksD, manifestD)...)
	write(append(chunksE, manifestE, small(11), small(12))...)
	waitCommitted(25)
	in, ids = started(15, 18)
	check(in, ids, []int64{9}, cdc.BatchInput{FirstOffset: 15, LastOffset: 18, EventCount: 1, Offsets: []int64{18},
		Claims: []cdc.Claim{{Index: 0, Offsets: []int64{15, 16, 17}}}})
	in, ids = started(19, 24)
	check(in, ids, []int64{10, 11, 12}, cdc.BatchInput{FirstOffset: 19, LastOffset: 24, EventCount: 3, Offsets: []int64{22, 23, 24},
		Claims: []cdc.Claim{{Index: 0, Offsets: []int64{19, 20, 21}}}})
}

// TestIdleWaitGathersWhileABatchRuns: with IdleWait, a change that comes to
// a quiet partition is started at once, not after MaxWait (an hour here);
// the changes that come while its workflow runs (no worker here: until it
// is terminated) are gathered, and started together once it ended.
func TestIdleWaitGathersWhileABatchRuns(t *testing.T) {
	const topic = "changes"
	brokers, _ := testenv.NewKafka(t, map[string]int32{topic: 1})
	tc := testenv.Dial(t, testenv.TemporalServer(t))
	suffix := fmt.Sprint(time.Now().UnixNano())
	cfg := poller.Config{Conn: kafkax.Conn{Brokers: brokers, Topic: topic}, GroupID: "g-" + suffix, TaskQueue: "q-" + suffix,
		MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Hour, IdleWait: 5 * time.Millisecond, MaxInFlight: 10,
		SessionTimeout: 6 * time.Second, MaxAttempts: 3, OrderingWindow: time.Minute}
	ctx, _ := runPoller(t, cfg, tc)

	w := kafkax.NewWriter(brokers, topic, kafkax.WriterOptions{})
	defer w.Close()
	write := func(id int64) {
		t.Helper()
		ev := demo.Event(id, event.OpInsert, demo.Employee{EmpID: int(id), FirstName: "Ada"})
		v, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteMessages(ctx, kafkax.Message(ev, v)); err != nil {
			t.Fatal(err)
		}
	}
	// batches waits for n batch workflows and returns their IDs by first offset.
	batches := func(n int) map[int64]string {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
				Query: fmt.Sprintf("TaskQueue = '%s'", cfg.TaskQueue)})
			if err == nil && len(resp.Executions) >= n {
				ids := map[int64]string{}
				for _, ex := range resp.Executions {
					var part, first, last int64
					id := ex.Execution.WorkflowId
					rest := strings.TrimPrefix(id, "cdc-"+topic+"-")
					if _, err := fmt.Sscanf(strings.ReplaceAll(rest, "-", " "), "%d %d %d", &part, &first, &last); err != nil {
						t.Fatalf("workflow ID %s: %v", id, err)
					}
					ids[first] = fmt.Sprintf("%d-%d", first, last)
				}
				return ids
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d batch workflows, want %d (%v)", len(resp.GetExecutions()), n, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	write(1)
	if got := batches(1); got[0] != "0-0" {
		t.Fatalf("batches %v, want the first change alone, started at once", got)
	}
	write(2)
	write(3)
	resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: fmt.Sprintf("TaskQueue = '%s'", cfg.TaskQueue)})
	if err != nil || len(resp.Executions) != 1 {
		t.Fatalf("while the first batch runs: %v, %v; want it alone", resp, err)
	}
	if err := tc.TerminateWorkflow(ctx, resp.Executions[0].Execution.WorkflowId, "", "the test ends it"); err != nil {
		t.Fatal(err)
	}
	if got := batches(2); got[1] != "1-2" {
		t.Fatalf("batches %v, want the two changes that came while the first ran together", got)
	}
}

// TestBatchesExplainThemselves: a batch's workflow carries its summary,
// its details and the search attributes CdcTables and CdcPartition, and is
// found by them; it is asked to record its outcome, since the server has
// CdcOutcome.
func TestBatchesExplainThemselves(t *testing.T) {
	const topic = "changes"
	brokers, _ := testenv.NewKafka(t, map[string]int32{topic: 2})
	tc := testenv.Dial(t, testenv.TemporalServer(t))
	suffix := fmt.Sprint(time.Now().UnixNano())
	cfg := poller.Config{Conn: kafkax.Conn{Brokers: brokers, Topic: topic}, GroupID: "g-" + suffix, TaskQueue: "q-" + suffix,
		Namespace: "default", MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond, MaxInFlight: 10,
		SessionTimeout: 6 * time.Second, MaxAttempts: 3, OrderingWindow: time.Minute}
	ctx, _ := runPoller(t, cfg, tc)
	w := kafkax.NewWriter(brokers, topic, kafkax.WriterOptions{})
	defer w.Close()
	// Two tables of a run of its own, in partition 1.
	table := "public.explained_" + suffix
	var msgs []kafka.Message
	for i := range 3 {
		ev := demo.Event(int64(i+1), event.OpInsert, demo.Employee{EmpID: i + 1, FirstName: "Ada"})
		if i == 2 {
			ev.Table = table
		}
		v, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Partition: 1, Key: []byte("k"), Value: v})
	}
	if err := (&kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: fixedPartition(1)}).WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	query := fmt.Sprintf("WorkflowType = 'ApplyBatch' AND CdcTables = '%s' AND CdcPartition = 1 AND TaskQueue = '%s'", table, cfg.TaskQueue)
	var id string
	deadline := time.Now().Add(time.Minute)
	for id == "" {
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Executions) == 1 {
			id = resp.Executions[0].Execution.WorkflowId
		}
		if time.Now().After(deadline) {
			t.Fatalf("no batch found by %s", query)
		}
		time.Sleep(100 * time.Millisecond) // poll the visibility store, which lags the start
	}
	desc, err := tc.DescribeWorkflow(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	summary, err := desc.GetStaticSummary()
	if err != nil {
		t.Fatal(err)
	}
	details, err := desc.GetStaticDetails()
	if err != nil {
		t.Fatal(err)
	}
	dc := temporalx.DataConverter()
	if want := fmt.Sprintf("3 changes to public.employees (2), %s (1) · partition 1 · offsets 0-2", table); summary != want {
		t.Errorf("summary %q, want %q", summary, want)
	}
	if !strings.Contains(details, "| public.employees | 2 | 0 | 0 | 0 |") || !strings.Contains(details, "Offsets: 0-2") {
		t.Errorf("details:\n%s", details)
	}
	var in cdc.BatchInput
	hist := tc.GetWorkflowHistory(ctx, id, "", false, 0)
	ev, err := hist.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := dc.FromPayload(ev.GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads()[0], &in); err != nil {
		t.Fatal(err)
	}
	if !in.SetOutcome || in.Offsets.String() != "0-2" {
		t.Errorf("input: set outcome %v, offsets %q", in.SetOutcome, in.Offsets)
	}
}

// fixedPartition writes every message to one partition.
type fixedPartition int

func (f fixedPartition) Balance(kafka.Message, ...int) int { return int(f) }
