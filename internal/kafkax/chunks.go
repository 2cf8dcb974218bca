package kafkax

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Headers of a chunk message: a slice of a large encoded event, published
// before the event's manifest (see event.Chunks) with the same key.
const (
	HeaderChunk       = "cdcflow-chunk"        // "i/n": chunk i (from 0) of n
	HeaderChunkAction = "cdcflow-action-id"    // the action_id of the event
	HeaderChunkSHA256 = "cdcflow-chunk-sha256" // the SHA-256 of the whole event, as in its manifest
)

// Messages returns the Kafka messages of an encoded change event. An event
// of at most event.ChunkBytes is one message, last; a larger one is its
// chunks, to be written and acknowledged first, and its manifest, last.
func Messages(ev event.Event, value []byte) (chunks []kafka.Message, last kafka.Message, err error) {
	if len(value) <= event.ChunkBytes {
		return nil, Message(ev, value), nil
	}
	manifest, parts := event.Split(ev, value, event.ChunkBytes)
	mvalue, err := event.Encode(manifest)
	if err != nil {
		return nil, kafka.Message{}, fmt.Errorf("encode manifest of action_id %d: %w", ev.ActionID, err)
	}
	key := Key(ev.Table, ev.Key)
	action := []byte(strconv.FormatInt(ev.ActionID, 10))
	sum := []byte(manifest.Chunks.SHA256)
	chunks = make([]kafka.Message, len(parts))
	for i, p := range parts {
		chunks[i] = kafka.Message{Key: key, Value: p, Headers: []kafka.Header{
			{Key: HeaderChunk, Value: fmt.Appendf(nil, "%d/%d", i, len(parts))},
			{Key: HeaderChunkAction, Value: action},
			{Key: HeaderChunkSHA256, Value: sum},
		}}
	}
	return chunks, kafka.Message{Key: key, Value: mvalue}, nil
}

// Chunk identifies a chunk message.
type Chunk struct {
	ActionID     int64
	Index, Count int
	SHA256       string
}

// ChunkOf reports whether headers are those of a chunk message, and which
// chunk it is; a chunk header that does not parse is an error.
func ChunkOf(headers []kafka.Header) (Chunk, bool, error) {
	var c Chunk
	var pos, action, sum string
	for _, h := range headers {
		switch h.Key {
		case HeaderChunk:
			pos = string(h.Value)
		case HeaderChunkAction:
			action = string(h.Value)
		case HeaderChunkSHA256:
			sum = string(h.Value)
		}
	}
	if pos == "" {
		return c, false, nil
	}
	i, n, ok := strings.Cut(pos, "/")
	var err1, err2, err3 error
	c.Index, err1 = strconv.Atoi(i)
	c.Count, err2 = strconv.Atoi(n)
	c.ActionID, err3 = strconv.ParseInt(action, 10, 64)
	switch {
	case !ok || err1 != nil || err2 != nil || c.Count < 1 || c.Index < 0 || c.Index >= c.Count:
		return c, true, fmt.Errorf("chunk message: header %s is %q, want i/n with 0 <= i < n", HeaderChunk, pos)
	case err3 != nil || c.ActionID <= 0:
		return c, true, fmt.Errorf("chunk message: header %s is %q, want a positive action_id", HeaderChunkAction, action)
	case sum == "":
		return c, true, fmt.Errorf("chunk message: header %s is missing", HeaderChunkSHA256)
	}
	c.SHA256 = sum
	return c, true, nil
}

// Runs follows the chunk runs of one partition in the order they are read,
// and finds the chunks of a manifest: the last complete run 0..n-1 of its
// action_id and SHA-256 read before it. Capture writes a run and then its
// manifest; a retry after a failure or a crash writes the whole run again,
// and a produce request retried by the client may repeat chunks, so a
// partition may hold incomplete runs, repeated chunks and whole repeated
// runs before a manifest. A run is open from its first chunk until a
// manifest or any other event of its action_id is read, or until it is
// abandoned (see Abandon).
type Runs struct {
	open map[int64]*actionRuns
}

// actionRuns is what was read of the chunks of one action_id.
type actionRuns struct {
	first  int64     // offset of the first chunk read
	latest time.Time // time of the latest chunk read
	bySum  map[string]*run
}

type run struct {
	count    int
	cur      []int64 // offsets of chunks 0..len-1 of the run being read
	complete []int64 // the last complete run
}

// Add records chunk c, read at offset off, written at time at.
func (r *Runs) Add(c Chunk, off int64, at time.Time) {
	if r.open == nil {
		r.open = map[int64]*actionRuns{}
	}
	a := r.open[c.ActionID]
	if a == nil {
		a = &actionRuns{first: off, bySum: map[string]*run{}}
		r.open[c.ActionID] = a
	}
	a.latest = at
	ru := a.bySum[c.SHA256]
	if ru == nil || ru.count != c.Count {
		ru = &run{count: c.Count}
		a.bySum[c.SHA256] = ru
	}
	switch {
	case c.Index == 0:
		ru.cur = []int64{off} // a run starts (again)
	case ru.cur != nil && c.Index == len(ru.cur):
		ru.cur = append(ru.cur, off)
	case ru.cur != nil && c.Index < len(ru.cur):
		// A repeated chunk (a retried produce request): the first one stays.
	default:
		ru.cur = nil // a chunk is missing: this run cannot complete
	}
	if len(ru.cur) == ru.count {
		ru.complete, ru.cur = ru.cur, nil
	}
}

// Claim returns the offsets of the chunks of a manifest, in order: those of
// the last complete run of its action_id and SHA-256 read before it; false
// when there is none. It closes the runs of the action_id, but for a run
// begun after the claimed one and not complete yet: a later attempt of
// capture, which started while this manifest was still on its way.
func (r *Runs) Claim(manifest event.Event) ([]int64, bool) {
	a := r.open[manifest.ActionID]
	delete(r.open, manifest.ActionID)
	if a == nil || manifest.Chunks == nil {
		return nil, false
	}
	var claim []int64
	if ru := a.bySum[manifest.Chunks.SHA256]; ru != nil && ru.count == manifest.Chunks.Count {
		claim = ru.complete
	}
	if claim == nil {
		return nil, false
	}
	for sum, ru := range a.bySum {
		if len(ru.cur) == 0 || ru.cur[0] < claim[0] {
			continue
		}
		if len(ru.cur) == 0 {
			continue
		}
		if r.open[manifest.ActionID] == nil {
			r.open[manifest.ActionID] = &actionRuns{first: ru.cur[0], latest: a.latest, bySum: map[string]*run{}}
		}
		b := r.open[manifest.ActionID]
		b.first = min(b.first, ru.cur[0])
		b.bySum[sum] = &run{count: ru.count, cur: ru.cur}
	}
	return claim, true
}

// Claimable reports whether Claim would find the chunks of manifest,
// without closing anything.
func (r *Runs) Claimable(manifest event.Event) bool {
	a := r.open[manifest.ActionID]
	if a == nil || manifest.Chunks == nil {
		return false
	}
	ru := a.bySum[manifest.Chunks.SHA256]
	return ru != nil && ru.count == manifest.Chunks.Count && ru.complete != nil
}

// Close closes the runs of actionID: an event of it other than a manifest
// was read (a later attempt published it whole, or as too large), so its
// chunks read so far are orphans.
func (r *Runs) Close(actionID int64) { delete(r.open, actionID) }

// Abandon closes the runs whose latest chunk was written more than age
// before now (the time of a message read after them): capture writes a
// manifest right after its run, so such a run's manifest will not come.
func (r *Runs) Abandon(now time.Time, age time.Duration) {
	for id, a := range r.open {
		if !a.latest.IsZero() && now.Sub(a.latest) > age {
			delete(r.open, id)
		}
	}
}

// Hold returns the offset of the first chunk of the open runs: a batch must
// be cut before it, so that a run stays with its manifest.
func (r *Runs) Hold() (int64, bool) {
	var first int64
	found := false
	for _, a := range r.open {
		if !found || a.first < first {
			first, found = a.first, true
		}
	}
	return first, found
}

// ErrGone is returned by ChunkReader.Read when the topic no longer holds a
// requested offset: retention deleted it, or the topic was recreated.
var ErrGone = errors.New("offset no longer in the topic")

// ChunkReader reads messages at given offsets of a partition: the chunks
// of large events, named by the claims the starter records.
type ChunkReader struct {
	client *kafka.Client
}

// NewChunkReader returns a reader of the cluster at brokers, reached
// without TLS nor SASL; see Cluster.ChunkReader.
func NewChunkReader(brokers []string) *ChunkReader {
	return Plain(brokers).ChunkReader()
}

// ChunkReader returns a reader of the cluster.
func (c *Cluster) ChunkReader() *ChunkReader {
	return &ChunkReader{client: &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 30 * time.Second, Transport: c.Transport}}
}

// fetchBytes bounds one fetch response; a record batch larger than that is
// still returned whole by the broker.
const fetchBytes = 8 << 20

// Read returns the messages at offsets (ascending) of topic's partition, in
// that order. An offset the topic no longer holds is an error wrapping
// ErrGone; any other error may pass on retry.
func (r *ChunkReader) Read(ctx context.Context, topic string, partition int, offsets []int64) ([]kafka.Message, error) {
	out := make([]kafka.Message, 0, len(offsets))
	for len(out) < len(offsets) {
		want := offsets[len(out)]
		res, err := r.client.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: partition, Offset: want,
			MinBytes: 1, MaxBytes: fetchBytes, MaxWait: 500 * time.Millisecond})
		if err != nil {
			return nil, fmt.Errorf("fetch %s[%d] offset %d: %w", topic, partition, want, err)
		}
		if errors.Is(res.Error, kafka.OffsetOutOfRange) {
			return nil, fmt.Errorf("%s[%d] offset %d: %w (the partition holds %d..%d)", topic, partition, want, ErrGone,
				res.LogStartOffset, res.HighWatermark-1)
		}
		if res.Error != nil {
			return nil, fmt.Errorf("fetch %s[%d] offset %d: %w", topic, partition, want, res.Error)
		}
		n := len(out)
		out, err = readWanted(res.Records, topic, partition, offsets, out)
		if err != nil {
			return nil, err
		}
		if len(out) == n {
			// Nothing at or after the offset we want: it is below the log
			// start (deleted) or beyond the end (a recreated topic).
			if want < res.LogStartOffset || want >= res.HighWatermark {
				return nil, fmt.Errorf("%s[%d] offset %d: %w (the partition holds %d..%d)", topic, partition, want, ErrGone,
					res.LogStartOffset, res.HighWatermark-1)
			}
			return nil, fmt.Errorf("fetch %s[%d] offset %d: no record returned", topic, partition, want)
		}
	}
	return out, nil
}

// readWanted appends to out the records of rr at the offsets still wanted.
// A wanted offset passed over (compacted away) is gone.
func readWanted(rr kafka.RecordReader, topic string, partition int, offsets []int64, out []kafka.Message) ([]kafka.Message, error) {
	defer func() {
		if c, ok := rr.(io.Closer); ok {
			c.Close()
		}
	}()
	for len(out) < len(offsets) {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s[%d]: %w", topic, partition, err)
		}
		want := offsets[len(out)]
		if rec.Offset < want {
			continue
		}
		if rec.Offset > want {
			return nil, fmt.Errorf("%s[%d] offset %d: %w (the next record is at %d)", topic, partition, want, ErrGone, rec.Offset)
		}
		m := kafka.Message{Topic: topic, Partition: partition, Offset: rec.Offset, Time: rec.Time, Headers: rec.Headers}
		if rec.Key != nil {
			if m.Key, err = kafka.ReadAll(rec.Key); err != nil {
				return nil, fmt.Errorf("read %s[%d] offset %d: %w", topic, partition, rec.Offset, err)
			}
		}
		if rec.Value != nil {
			if m.Value, err = kafka.ReadAll(rec.Value); err != nil {
				return nil, fmt.Errorf("read %s[%d] offset %d: %w", topic, partition, rec.Offset, err)
			}
		}
		out = append(out, m)
	}
	return out, nil
}
