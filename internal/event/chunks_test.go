package event

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// largeEvent returns an update of about 1.2 MiB: too large for one message.
func largeEvent(t *testing.T) (Event, []byte) {
	t.Helper()
	big := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB
	ev := Event{ActionID: 42, Table: "public.docs", Op: OpUpdate, Key: []byte(`{"id":7}`),
		After:      []byte(`{"id":7,"body":"` + big + `","note":"żółw 🐢"}`),
		Before:     []byte(`{"id":7,"body":"` + big[:len(big)-1] + `"}`),
		CommitTime: time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC), SchemaVersion: CurrentSchemaVersion}
	encoded, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, encoded
}

// TestSplitAndAssemble: a large event cut into chunks and joined again is
// the same event, and its manifest is a valid event without row images.
func TestSplitAndAssemble(t *testing.T) {
	ev, encoded := largeEvent(t)
	manifest, chunks := Split(ev, encoded, ChunkBytes)
	if len(chunks) != 3 {
		t.Fatalf("%d bytes in %d chunks, want 3", len(encoded), len(chunks))
	}
	for i, c := range chunks {
		if len(c) > ChunkBytes {
			t.Fatalf("chunk %d has %d bytes, more than %d", i, len(c), ChunkBytes)
		}
	}
	wire, err := Encode(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(wire) > 1024 {
		t.Fatalf("the manifest has %d bytes: %s", len(wire), wire)
	}
	decoded, err := Decode(wire)
	if err != nil {
		t.Fatalf("decode manifest %s: %v", wire, err)
	}
	if decoded.After != nil || decoded.Before != nil || decoded.Chunks.Count != 3 || decoded.Chunks.Bytes != int64(len(encoded)) {
		t.Fatalf("manifest %s", wire)
	}
	full, again, err := Assemble(decoded, chunks)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, encoded) {
		t.Fatal("the joined chunks differ from the encoded event")
	}
	if diff := cmp.Diff(wireForm(t, ev), wireForm(t, full)); diff != "" {
		t.Fatalf("reassembled event (-want +got):\n%s", diff)
	}
}

// wireForm is an event as it travels, for comparison.
func wireForm(t *testing.T, ev Event) string {
	t.Helper()
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAssembleRejects: chunks that do not match their manifest give an error
// that says how.
func TestAssembleRejects(t *testing.T) {
	ev, encoded := largeEvent(t)
	manifest, chunks := Split(ev, encoded, ChunkBytes)
	flipped := append([]byte(nil), chunks[1]...)
	flipped[100] ^= 1
	other := manifest
	other.ActionID = 43
	cases := []struct {
		name     string
		manifest Event
		chunks   [][]byte
		want     string
	}{
		{"a chunk missing", manifest, chunks[:2], "action_id 42: 2 chunks, the manifest names 3"},
		{"a chunk repeated", manifest, [][]byte{chunks[0], chunks[1], chunks[1], chunks[2]}, "action_id 42: 4 chunks, the manifest names 3"},
		{"a chunk cut short", manifest, [][]byte{chunks[0], chunks[1][:10], chunks[2]}, "action_id 42: the chunks hold 786648 bytes, the manifest names 1310926"},
		{"a byte changed", manifest, [][]byte{chunks[0], flipped, chunks[2]}, "action_id 42: the chunks have SHA-256"},
		{"chunks out of order", manifest, [][]byte{chunks[1], chunks[0], chunks[2]}, "action_id 42: the chunks have SHA-256"},
		{"another change's chunks", other, chunks, "the chunks hold action_id 42 (update public.docs {\"id\":7}), the manifest names action_id 43"},
		{"not a manifest", ev, chunks, "chunks: action_id 42 is not a manifest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Assemble(c.manifest, c.chunks)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
