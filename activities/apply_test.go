package activities_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/segmentio/kafka-go"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestApplyEventsReadsLargeChanges: against real PostgreSQL and the
// in-process broker, a manifest is applied as its full event read from the
// chunks its claim names, while a change marked too large, a claim whose
// chunks retention deleted and one pointing at the wrong chunks fail with
// their classes, keeping their manifests (never the full event) and claims.
func TestApplyEventsReadsLargeChanges(t *testing.T) {
	ctx := context.Background()
	pool, apl := testenv.NewDestination(t, applier.DefaultTimeouts)
	k, err := localsvc.StartKafka(localsvc.KafkaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	conn, err := kafka.DialContext(ctx, "tcp", k.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The topic short forgets its messages after a second (once retention runs).
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: "changes", NumPartitions: 1, ReplicationFactor: 1},
		kafka.TopicConfig{Topic: "short", NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "1000"}}}); err != nil {
		t.Fatal(err)
	}

	big := strings.Repeat("long name ", 120<<10) // 1.2 MiB
	large := demo.Event(1, event.OpInsert, demo.Employee{EmpID: 1, FirstName: big, DOB: "1990-01-02", City: "Oslo"})
	expiring := demo.Event(2, event.OpInsert, demo.Employee{EmpID: 2, FirstName: big, DOB: "1990-01-02"})
	misplaced := demo.Event(3, event.OpInsert, demo.Employee{EmpID: 3, FirstName: big + "!", DOB: "1990-01-02"})
	small := demo.Event(4, event.OpInsert, demo.Employee{EmpID: 4, FirstName: "Ada", DOB: "1990-01-02"})
	tooLarge := demo.Event(5, event.OpInsert, demo.Employee{EmpID: 5})
	tooLarge.After, tooLarge.TooLarge = nil, &event.TooLarge{Bytes: 9 << 20, Limit: 8 << 20}

	write := func(topic string, ev event.Event) ([]byte, []int64) {
		value, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		chunks, manifest, err := kafkax.Messages(ev, value)
		if err != nil {
			t.Fatal(err)
		}
		w := kafkax.NewWriter(k.Brokers, topic, kafkax.WriterOptions{})
		defer w.Close()
		if err := w.WriteMessages(ctx, chunks...); err != nil {
			t.Fatal(err)
		}
		first, err := (&kafka.Client{Addr: kafka.TCP(k.Brokers...)}).ListOffsets(ctx, &kafka.ListOffsetsRequest{
			Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
		if err != nil {
			t.Fatal(err)
		}
		end := first.Topics[topic][0].LastOffset
		offsets := make([]int64, len(chunks))
		for i := range offsets {
			offsets[i] = end - int64(len(chunks)) + int64(i)
		}
		return manifest.Value, offsets
	}
	largeManifest, largeOffsets := write("changes", large)
	expiringManifest, expiringOffsets := write("short", expiring)
	misplacedManifest, _ := write("changes", misplaced)
	smallValue, _ := event.Encode(small)
	tooLargeValue, _ := event.Encode(tooLarge)
	time.Sleep(1100 * time.Millisecond)
	k.Cluster().ApplyRetention()

	a := &activities.Apply{Applier: apl, Chunks: kafkax.NewChunkReader(k.Brokers)}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	apply := func(claims *cdc.BatchClaims, events ...[]byte) cdc.ApplyOutcome {
		t.Helper()
		val, err := env.ExecuteActivity(a.ApplyEvents, event.NewBatch(events), []int(nil), claims)
		if err != nil {
			t.Fatal(err)
		}
		var out cdc.ApplyOutcome
		if err := val.Get(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(want, got cdc.ApplyOutcome, errs ...string) {
		t.Helper()
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(cdc.FailedEvent{}, "Error")); diff != "" {
			t.Fatalf("outcome (-want +got):\n%s", diff)
		}
		for i, w := range errs {
			if !strings.Contains(got.Failed[i].Error, w) {
				t.Errorf("failure %d: %q, want it to contain %q", i, got.Failed[i].Error, w)
			}
		}
	}

	claims := &cdc.BatchClaims{Topic: "changes", Partition: 0, Claims: []cdc.Claim{
		{Index: 0, Offsets: largeOffsets},
		{Index: 1, Offsets: largeOffsets}, // the chunks of another change
	}}
	check(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 2}, Failed: []cdc.FailedEvent{
		{Index: 1, ActionID: 3, Table: demo.Table, ErrorClass: cdc.ClassInvalidEvent,
			Claim: &cdc.ClaimCheck{Topic: "changes", Partition: 0, Offsets: largeOffsets}},
		{Index: 3, ActionID: 5, Table: demo.Table, ErrorClass: cdc.ClassChangeTooLarge},
	}}, apply(claims, largeManifest, misplacedManifest, smallValue, tooLargeValue),
		"changes[0] offset 0 is not chunk 0/3 of action_id 3",
		"insert of public.employees {\"emp_id\":5}: a row image of 9437184 bytes exceeds capture's limit of 8388608 bytes (CDCFLOW_MAX_CHANGE_BYTES); "+
			"the change was not published and is kept on the source in cdcflow.oversized_changes (action_id 5)")

	expiredClaim := &cdc.BatchClaims{Topic: "short", Partition: 0, Claims: []cdc.Claim{{Index: 0, Offsets: expiringOffsets}}}
	check(cdc.ApplyOutcome{Failed: []cdc.FailedEvent{
		{Index: 0, ActionID: 2, Table: demo.Table, ErrorClass: cdc.ClassClaimExpired,
			Claim: &cdc.ClaimCheck{Topic: "short", Partition: 0, Offsets: expiringOffsets}},
	}}, apply(expiredClaim, expiringManifest),
		"the chunks of action_id 2 are gone from the change topic (its retention passed before the change was applied): short[0] offset 0")

	var name string
	if err := pool.QueryRow(ctx, `SELECT first_name FROM employees WHERE emp_id = 1`).Scan(&name); err != nil || name != big {
		t.Fatalf("the large row has a name of %d bytes (%v), want %d", len(name), err, len(big))
	}

	// ResolveClaim gives a parked change's full event, or a final error.
	full, err := activities.ResolveClaim(ctx, a.Chunks, largeManifest, &cdc.ClaimCheck{Topic: "changes", Offsets: largeOffsets})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := event.DecodeWhole(full); err != nil || string(ev.After) != string(large.After) {
		t.Fatalf("resolved %d bytes: %v", len(full), err)
	}
	_, err = activities.ResolveClaim(ctx, a.Chunks, expiringManifest, &cdc.ClaimCheck{Topic: "short", Offsets: expiringOffsets})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != string(cdc.ClassClaimExpired) || !appErr.NonRetryable() {
		t.Fatalf("resolving an expired claim: %v, want a final ClaimExpired", err)
	}

	// Parked, a large change is recorded whole and published to the DLQ
	// topic as its manifest (the topic takes no larger messages); one whose
	// chunks are gone is recorded as its manifest. A replay reads the
	// recorded change: here a duplicate, since it was applied above.
	pub := &countingPublisher{w: kafkax.NewWriter(k.Brokers, "changes_dlq", kafkax.WriterOptions{AutoCreateTopic: true})}
	defer pub.w.Close()
	d := &activities.DeadLetters{Store: deadletter.NewStore(pool), Publisher: pub, Chunks: a.Chunks, Applier: apl}
	now := time.Now()
	rec := func(id string, actionID int64, message []byte, claim *cdc.ClaimCheck) cdc.DeadLetterRecord {
		return cdc.DeadLetterRecord{ID: id, Group: "g", ActionID: actionID, Topic: "changes", Table: demo.Table,
			ErrorClass: cdc.ClassConstraint, Error: "x", Attempts: 1, FirstFailure: now, LastFailure: now,
			BatchWorkflowID: "b", BatchRunID: "r", Message: message, Claim: claim}
	}
	if _, err := d.Park(ctx, []cdc.DeadLetterRecord{
		rec("dlq-1", 1, largeManifest, &cdc.ClaimCheck{Topic: "changes", Offsets: largeOffsets}),
		rec("dlq-2", 2, expiringManifest, &cdc.ClaimCheck{Topic: "short", Offsets: expiringOffsets}),
	}); err != nil {
		t.Fatal(err)
	}
	recorded := map[string][]byte{}
	rows, err := pool.Query(ctx, `SELECT id, message FROM cdcflow.dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var msg []byte
		if err := rows.Scan(&id, &msg); err != nil {
			t.Fatal(err)
		}
		recorded[id] = msg
	}
	if string(recorded["dlq-1"]) != string(full) || string(recorded["dlq-2"]) != string(expiringManifest) {
		t.Fatalf("recorded %d and %d bytes, want the full change (%d) and the manifest (%d)",
			len(recorded["dlq-1"]), len(recorded["dlq-2"]), len(full), len(expiringManifest))
	}
	if pub.bytes > 2*len(largeManifest)+2*len(expiringManifest) {
		t.Fatalf("%d bytes published to the DLQ topic, want the manifests only", pub.bytes)
	}
	env.RegisterActivity(d)
	val, err := env.ExecuteActivity(d.ReplayChanges, cdc.ReplayInput{IDs: []string{"dlq-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var results []cdc.ReplayResult
	if err := val.Get(&results); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]cdc.ReplayResult{{ID: "dlq-1", Outcome: "duplicate: the change was applied before"}}, results); diff != "" {
		t.Fatalf("replay of the parked large change (-want +got):\n%s", diff)
	}
}

// TestApplyEventsParksATruncate: a TRUNCATE captured on the source is set
// aside for a person, with what to do, and the batch's other changes apply.
func TestApplyEventsParksATruncate(t *testing.T) {
	_, apl := testenv.NewDestination(t, applier.DefaultTimeouts)
	a := &activities.Apply{Applier: apl}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	before := demo.Event(1, event.OpInsert, demo.Employee{EmpID: 1, FirstName: "Ada", DOB: "1990-01-02"})
	truncate := event.Event{ActionID: 2, Table: demo.Table, Op: event.OpTruncate, CommitTime: before.CommitTime,
		SchemaVersion: event.CurrentSchemaVersion, LSN: "0/16B3748"}
	after := demo.Event(3, event.OpInsert, demo.Employee{EmpID: 2, FirstName: "Bo", DOB: "1990-01-02"})
	var raws [][]byte
	for _, ev := range []event.Event{before, truncate, after} {
		b, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, b)
	}
	val, err := env.ExecuteActivity(a.ApplyEvents, event.NewBatch(raws), []int(nil), (*cdc.BatchClaims)(nil))
	if err != nil {
		t.Fatal(err)
	}
	var out cdc.ApplyOutcome
	if err := val.Get(&out); err != nil {
		t.Fatal(err)
	}
	want := cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 2}, Failed: []cdc.FailedEvent{
		{Index: 1, ActionID: 2, Table: demo.Table, ErrorClass: cdc.ClassTruncate}}}
	if diff := cmp.Diff(want, out, cmpopts.IgnoreFields(cdc.FailedEvent{}, "Error")); diff != "" {
		t.Fatalf("outcome (-want +got):\n%s", diff)
	}
	if msg := out.Failed[0].Error; !strings.Contains(msg, "the source truncated public.employees (commit LSN 0/16B3748): cdcflow does not empty a destination table on its own") {
		t.Errorf("error %q", msg)
	}
}
