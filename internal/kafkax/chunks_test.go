package kafkax_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/localsvc"
)

// largeEvent returns an insert of size bytes of text: chunked when it is
// larger than event.ChunkBytes.
func largeEvent(t *testing.T, actionID int64, size int) (event.Event, []byte) {
	t.Helper()
	ev := event.Event{ActionID: actionID, Table: "public.docs", Op: event.OpInsert, Key: []byte(`{"id":1}`),
		After:      []byte(`{"id":1,"body":"` + strings.Repeat("x", size) + `"}`),
		CommitTime: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), SchemaVersion: event.CurrentSchemaVersion}
	value, err := event.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, value
}

// TestMessagesOfASmallEvent: an event up to event.ChunkBytes is one message.
func TestMessagesOfASmallEvent(t *testing.T) {
	ev, value := largeEvent(t, 1, 100)
	chunks, last, err := kafkax.Messages(ev, value)
	if err != nil || len(chunks) != 0 || string(last.Value) != string(value) || string(last.Key) != `public.docs:{"id":1}` {
		t.Fatalf("chunks %d, last %s, err %v", len(chunks), last.Value, err)
	}
}

// TestRunsFindTheLastCompleteRun: what the reader takes for a manifest's
// chunks, whatever retries of capture and of the Kafka client left before
// it. Chunks are written as "action:index", all runs having 3 chunks.
func TestRunsFindTheLastCompleteRun(t *testing.T) {
	cases := []struct {
		name  string
		log   string // chunks and events (e<action>) in offset order, from offset 0
		claim []int64
		hold  int64 // first chunk of the runs still open before the manifest
	}{
		{"one run", "7:0 7:1 7:2", []int64{0, 1, 2}, 0},
		{"a repeated chunk (produce retried)", "7:0 7:1 7:1 7:2", []int64{0, 1, 3}, 0},
		{"repeated chunks after the run", "7:0 7:1 7:2 7:1 7:2", []int64{0, 1, 2}, 0},
		{"the run written twice", "7:0 7:1 7:2 7:0 7:1 7:2", []int64{3, 4, 5}, 0},
		{"an abandoned run, then a complete one", "7:0 7:1 7:0 7:1 7:2", []int64{2, 3, 4}, 0},
		{"a complete run, then an abandoned one", "7:0 7:1 7:2 7:0", []int64{0, 1, 2}, 0},
		{"another change in between", "7:0 e8 7:1 7:2", []int64{0, 2, 3}, 0},
		{"another change's run in between", "7:0 9:0 7:1 9:1 7:2", []int64{0, 2, 4}, 0},
		{"a chunk missing", "7:0 7:2", nil, 0},
		{"a chunk missing, then a complete run", "7:0 7:2 7:0 7:1 7:2", []int64{2, 3, 4}, 0},
		{"another run's chunks only", "9:0 9:1 9:2", nil, 0},
		{"runs closed by an event of their action", "7:0 7:1 e7 7:0 7:1 7:2", []int64{3, 4, 5}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var runs kafkax.Runs
			at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			for off, item := range strings.Fields(c.log) {
				if strings.HasPrefix(item, "e") {
					id, _ := strconv.ParseInt(item[1:], 10, 64)
					runs.Close(id)
					continue
				}
				action, index, _ := strings.Cut(item, ":")
				id, _ := strconv.ParseInt(action, 10, 64)
				i, _ := strconv.Atoi(index)
				runs.Add(kafkax.Chunk{ActionID: id, Index: i, Count: 3, SHA256: "sum" + action}, int64(off), at)
			}
			if hold, ok := runs.Hold(); !ok || hold != c.hold {
				t.Fatalf("hold %d (%v), want %d", hold, ok, c.hold)
			}
			claim, ok := runs.Claim(event.Event{ActionID: 7, Chunks: &event.Chunks{Count: 3, SHA256: "sum7"}})
			if diff := cmp.Diff(c.claim, claim); diff != "" || ok != (c.claim != nil) {
				t.Fatalf("claim (-want +got), found %v:\n%s", ok, diff)
			}
		})
	}
}

// TestRunsHoldAndAbandon: an open run holds batches from its first chunk
// until its manifest comes, or until a message written a minute after its
// latest chunk shows that capture abandoned it.
func TestRunsHoldAndAbandon(t *testing.T) {
	var runs kafkax.Runs
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	runs.Add(kafkax.Chunk{ActionID: 7, Index: 0, Count: 2, SHA256: "a"}, 10, at)
	runs.Add(kafkax.Chunk{ActionID: 8, Index: 0, Count: 2, SHA256: "b"}, 12, at.Add(30*time.Second))
	if hold, ok := runs.Hold(); !ok || hold != 10 {
		t.Fatalf("hold %d %v, want 10", hold, ok)
	}
	runs.Abandon(at.Add(time.Minute+time.Second), time.Minute)
	if hold, ok := runs.Hold(); !ok || hold != 12 {
		t.Fatalf("after abandoning the first run: hold %d %v, want 12", hold, ok)
	}
	if _, ok := runs.Claim(event.Event{ActionID: 8, Chunks: &event.Chunks{Count: 2, SHA256: "b"}}); ok {
		t.Fatal("claimed an incomplete run")
	}
	if hold, ok := runs.Hold(); ok {
		t.Fatalf("hold %d after the last manifest", hold)
	}

	// A manifest that comes while a later attempt writes the run again
	// leaves that run open: its own manifest is still to come.
	for i, off := range []int64{20, 21, 22} {
		runs.Add(kafkax.Chunk{ActionID: 9, Index: i, Count: 3, SHA256: "c"}, off, at)
	}
	runs.Add(kafkax.Chunk{ActionID: 9, Index: 0, Count: 3, SHA256: "c"}, 23, at)
	if claim, ok := runs.Claim(event.Event{ActionID: 9, Chunks: &event.Chunks{Count: 3, SHA256: "c"}}); !ok || claim[0] != 20 {
		t.Fatalf("claim %v %v, want 20..22", claim, ok)
	}
	if hold, ok := runs.Hold(); !ok || hold != 23 {
		t.Fatalf("hold %d %v, want the later attempt's first chunk, 23", hold, ok)
	}
	runs.Add(kafkax.Chunk{ActionID: 9, Index: 1, Count: 3, SHA256: "c"}, 24, at)
	runs.Add(kafkax.Chunk{ActionID: 9, Index: 2, Count: 3, SHA256: "c"}, 25, at)
	if claim, ok := runs.Claim(event.Event{ActionID: 9, Chunks: &event.Chunks{Count: 3, SHA256: "c"}}); !ok || claim[0] != 23 {
		t.Fatalf("claim of the later attempt %v %v, want 23..25", claim, ok)
	}
}

// TestChunksRoundTripThroughKafka: a large event written to the in-process
// broker after an abandoned attempt and with a repeated chunk is read back
// from the offsets of its last complete run, and reassembles exactly.
func TestChunksRoundTripThroughKafka(t *testing.T) {
	ctx := context.Background()
	k, err := localsvc.StartKafka(localsvc.KafkaOptions{Topics: map[string]int32{"changes": 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ev, value := largeEvent(t, 42, 3<<20)
	chunks, manifest, err := kafkax.Messages(ev, value)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 7 || len(manifest.Value) > 1024 {
		t.Fatalf("%d bytes as %d chunks and a manifest of %d bytes", len(value), len(chunks), len(manifest.Value))
	}
	w := kafkax.NewWriter(k.Brokers, "changes", kafkax.WriterOptions{})
	defer w.Close()
	_, small := largeEvent(t, 41, 10)
	// An attempt that died after three chunks, an event of another change,
	// the whole run with chunk 4 written twice, then the manifest.
	log := append([]kafka.Message{}, chunks[:3]...)
	log = append(log, kafka.Message{Value: small})
	log = append(log, chunks[:5]...)
	log = append(log, chunks[4:]...)
	log = append(log, manifest)
	for _, m := range log { // one at a time: the order is the point
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	var runs kafkax.Runs
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: "changes", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var claim []int64
	for claim == nil {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c, isChunk, err := kafkax.ChunkOf(m.Headers)
		if err != nil {
			t.Fatal(err)
		}
		if isChunk {
			runs.Add(c, m.Offset, m.Time)
			continue
		}
		got, err := event.Decode(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if got.Chunks != nil {
			var ok bool
			if claim, ok = runs.Claim(got); !ok {
				t.Fatal("no complete run before the manifest")
			}
		}
	}
	if diff := cmp.Diff([]int64{4, 5, 6, 7, 8, 10, 11}, claim); diff != "" {
		t.Fatalf("claimed offsets (-want +got):\n%s", diff)
	}
	msgs, err := kafkax.NewChunkReader(k.Brokers).Read(ctx, "changes", 0, claim)
	if err != nil {
		t.Fatal(err)
	}
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		parts[i] = m.Value
	}
	m, _ := event.Decode(manifest.Value)
	full, encoded, err := event.Assemble(m, parts)
	if err != nil {
		t.Fatal(err)
	}
	if string(encoded) != string(value) || string(full.After) != string(ev.After) {
		t.Fatal("the reassembled event differs from the one written")
	}
}

// TestChunkReaderReportsOffsetsGone: offsets that retention deleted are
// ErrGone, with the range the partition still holds.
func TestChunkReaderReportsOffsetsGone(t *testing.T) {
	ctx := context.Background()
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
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: "changes", NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "1000"}}}); err != nil {
		t.Fatal(err)
	}
	w := kafkax.NewWriter(k.Brokers, "changes", kafkax.WriterOptions{})
	defer w.Close()
	ev, value := largeEvent(t, 42, 1<<20)
	chunks, _, err := kafkax.Messages(ev, value)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, chunks...); err != nil {
		t.Fatal(err)
	}
	reader := kafkax.NewChunkReader(k.Brokers)
	if _, err := reader.Read(ctx, "changes", 0, []int64{0, 1, 2}); err != nil {
		t.Fatalf("before retention: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	k.Cluster().ApplyRetention()
	_ = w.WriteMessages(ctx, kafka.Message{Value: []byte("later")}) // the partition goes on
	_, err = reader.Read(ctx, "changes", 0, []int64{0, 1, 2})
	if !errors.Is(err, kafkax.ErrGone) {
		t.Fatalf("after retention: %v, want ErrGone", err)
	}
	t.Log(err)
}
