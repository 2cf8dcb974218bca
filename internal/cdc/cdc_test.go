package cdc

import "testing"

// TestBatchWorkflowIDs: a batch read again gets the ID it had; a batch at the
// same offsets of a topic created again, with other messages, gets another;
// so do the undecodable messages of such a topic.
func TestBatchWorkflowIDs(t *testing.T) {
	first := [][]byte{[]byte(`{"action_id":1}`), []byte(`{"action_id":2}`)}
	again := [][]byte{[]byte(`{"action_id":1}`), []byte(`{"action_id":2}`)}
	recreated := [][]byte{[]byte(`{"action_id":7}`), []byte(`{"action_id":8}`)}
	id := func(values [][]byte) string { return BatchWorkflowID("changes", 0, 0, 1, BatchDigest(values)) }
	if id(first) != id(again) {
		t.Fatalf("the same batch read again: %s, then %s", id(first), id(again))
	}
	if id(first) == id(recreated) {
		t.Fatalf("another batch at the same offsets has the same ID %s", id(first))
	}
	// Lengths are part of the digest: moving a byte between messages changes it.
	if BatchDigest([][]byte{[]byte("ab"), []byte("c")}) == BatchDigest([][]byte{[]byte("a"), []byte("bc")}) {
		t.Fatal("the digest does not tell message boundaries apart")
	}
	if PoisonDeadLetterID("changes", 0, 5, []byte("x")) == PoisonDeadLetterID("changes", 0, 5, []byte("y")) {
		t.Fatal("undecodable messages at the same offset of two topics share a dead-letter ID")
	}
}
