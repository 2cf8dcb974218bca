package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
)

// Split cuts the encoded form of ev into chunks of at most size bytes and
// returns them with ev's manifest: ev without its row images, with Chunks
// describing the chunks. The chunks are slices of encoded.
func Split(ev Event, encoded []byte, size int) (Event, [][]byte) {
	var chunks [][]byte
	for rest := encoded; len(rest) > 0; {
		n := min(size, len(rest))
		chunks = append(chunks, rest[:n:n])
		rest = rest[n:]
	}
	sum := sha256.Sum256(encoded)
	manifest := ev
	manifest.Before, manifest.After, manifest.afterVals = nil, nil, nil
	manifest.Chunks = &Chunks{Count: len(chunks), Bytes: int64(len(encoded)), SHA256: hex.EncodeToString(sum[:])}
	return manifest, chunks
}

// Assemble joins the chunks of the event a manifest stands for, checks them
// against the manifest (count, size, SHA-256) and decodes the event, which
// must be the change the manifest names. It returns the event and its
// encoded form.
func Assemble(manifest Event, chunks [][]byte) (Event, []byte, error) {
	c := manifest.Chunks
	if c == nil {
		return Event{}, nil, invalid("chunks", "action_id %d is not a manifest", manifest.ActionID)
	}
	if len(chunks) != c.Count {
		return Event{}, nil, invalid("chunks", "action_id %d: %d chunks, the manifest names %d", manifest.ActionID, len(chunks), c.Count)
	}
	var n int64
	for _, ch := range chunks {
		n += int64(len(ch))
	}
	if n != c.Bytes {
		return Event{}, nil, invalid("chunks", "action_id %d: the chunks hold %d bytes, the manifest names %d", manifest.ActionID, n, c.Bytes)
	}
	encoded := bytes.Join(chunks, nil)
	sum := sha256.Sum256(encoded)
	if got := hex.EncodeToString(sum[:]); got != c.SHA256 {
		return Event{}, nil, invalid("chunks", "action_id %d: the chunks have SHA-256 %s, the manifest names %s", manifest.ActionID, got, c.SHA256)
	}
	ev, err := DecodeWhole(encoded)
	if err != nil {
		return Event{}, nil, err
	}
	if ev.ActionID != manifest.ActionID || ev.Table != manifest.Table || ev.Op != manifest.Op || !sameJSON(ev.Key, manifest.Key) {
		return Event{}, nil, invalid("chunks", "the chunks hold action_id %d (%s %s %s), the manifest names action_id %d (%s %s %s)",
			ev.ActionID, ev.Op, ev.Table, ev.Key, manifest.ActionID, manifest.Op, manifest.Table, manifest.Key)
	}
	return ev, encoded, nil
}
