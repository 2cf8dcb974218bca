// Package event defines cdcflow's change envelope: one JSON object per row
// change, as capture publishes it and the apply path consumes it.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Op is the kind of row change.
type Op string

const (
	OpInsert Op = "insert"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
	// OpTruncate empties the table: it has no key and no row images.
	OpTruncate Op = "truncate"
)

// MaxEventBytes bounds one encoded event as one Kafka message and one batch
// element: a bigger message cannot travel in a batch below Temporal's 2 MB
// payload limit, so it is rejected at decode time. Capture never writes one:
// an event larger than ChunkBytes travels as chunks and a manifest (see
// Chunks).
const MaxEventBytes = 1536 << 10

// ChunkBytes is the size of the chunks a large encoded event is cut into,
// and the largest event capture publishes whole. It is small against a
// batch (CDCFLOW_BATCH_MAX_BYTES, 1 MiB by default) so that events near it
// still share batches, and against a Kafka record batch (2 MiB) so that a
// produce request carries a few chunks.
const ChunkBytes = 512 << 10

// MaxChangeBytesLimit is the highest limit capture may set on a row image
// (CDCFLOW_MAX_CHANGE_BYTES).
const MaxChangeBytesLimit = 64 << 20

// MaxAssembledBytes bounds an event reassembled from its chunks: two row
// images at MaxChangeBytesLimit, each up to twice that as JSON (bytea
// travels as hex), and the envelope.
const MaxAssembledBytes = 4*MaxChangeBytesLimit + 1<<20

// CurrentSchemaVersion is the envelope version this build writes.
const CurrentSchemaVersion = 1

// Event is one row change. Key, After and Before stay raw JSON objects: the
// apply path hands them to PostgreSQL, which converts values to column types.
type Event struct {
	// Epoch and ActionID identify the change: ActionID increases in the
	// order changes were made within an epoch of the source, and a new epoch
	// (a restored source, a capture set up again) orders after the ones
	// before. Events of producers that know no epochs have epoch 0. Source
	// names the source database (capture's source_id), when known.
	Source        string          `json:"source,omitempty"`
	Epoch         int64           `json:"epoch,omitempty"`
	ActionID      int64           `json:"action_id"`
	Table         string          `json:"table"`
	Op            Op              `json:"op"`
	Key           json.RawMessage `json:"key"`
	After         json.RawMessage `json:"after,omitempty"`
	Before        json.RawMessage `json:"before,omitempty"`
	CommitTime    time.Time       `json:"commit_time"`
	SchemaVersion int             `json:"schema_version"`
	// Chunks, set on a manifest, says where the full event is: the event
	// was too large for one message and travels in chunk messages before
	// the manifest, which carries everything but the row images.
	Chunks *Chunks `json:"chunks,omitempty"`
	// TooLarge, set instead of the row images, marks a change whose row
	// image exceeded capture's limit: capture parked it on the source.
	TooLarge *TooLarge `json:"too_large,omitempty"`
	// LSN and Xid, from log-based capture: the commit LSN ("16/B374D848")
	// and the id of the change's transaction.
	LSN string `json:"lsn,omitempty"`
	Xid uint32 `json:"xid,omitempty"`
	// Unchanged, on an update from log-based capture, names the columns
	// left out of After: values stored out of line (TOAST) that the update
	// did not change, which the log does not carry. The apply keeps them.
	Unchanged []string `json:"unchanged,omitempty"`

	// Column names of Key and After, found by Decode; see KeyColumns.
	keyVals, afterVals map[string]json.RawMessage
}

// KeyColumns returns the column names of Key.
func (e Event) KeyColumns() ([]string, error) { return columns(e.Key, e.keyVals) }

// AfterColumns returns the column names of After (none for a delete).
func (e Event) AfterColumns() ([]string, error) { return columns(e.After, e.afterVals) }

func columns(obj json.RawMessage, known map[string]json.RawMessage) ([]string, error) {
	if known == nil && obj != nil {
		var err error
		if known, err = members(obj); err != nil {
			return nil, err
		}
	}
	if known == nil {
		return nil, nil
	}
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	return names, nil
}

func members(obj json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := json.Unmarshal(obj, &m)
	return m, err
}

// KeyDisagreement reports whether After names another row than Key (see
// the function KeyDisagreement); a delete has no After and always agrees.
func (e Event) KeyDisagreement() error {
	if e.After == nil {
		return nil
	}
	if e.keyVals == nil || e.afterVals == nil {
		return KeyDisagreement(e.Key, e.After)
	}
	return disagreement(e.keyVals, e.afterVals)
}

// Error is a decode failure; Field names the offending member of the envelope.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "invalid change event: " + e.Reason
	}
	return fmt.Sprintf("invalid change event: %s: %s", e.Field, e.Reason)
}

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Chunks describes the chunk messages of a large event: Count messages
// whose values, joined in order, are the encoded event, Bytes long, with the
// SHA-256 digest SHA256 (lowercase hex).
type Chunks struct {
	Count  int    `json:"count"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// TooLarge says by how much a change exceeded capture's limit: Bytes is the
// size of its largest row image, Limit the limit (CDCFLOW_MAX_CHANGE_BYTES).
type TooLarge struct {
	Bytes int64 `json:"bytes"`
	Limit int64 `json:"limit"`
}

// wire mirrors Event with every member optional so that a missing member can
// be told apart from a zero value.
type wire struct {
	Source        *string         `json:"source"`
	Epoch         json.RawMessage `json:"epoch"`
	ActionID      json.RawMessage `json:"action_id"`
	Table         *string         `json:"table"`
	Op            *string         `json:"op"`
	Key           json.RawMessage `json:"key"`
	After         json.RawMessage `json:"after"`
	Before        json.RawMessage `json:"before"`
	CommitTime    *string         `json:"commit_time"`
	SchemaVersion json.RawMessage `json:"schema_version"`
	Chunks        json.RawMessage `json:"chunks"`
	TooLarge      json.RawMessage `json:"too_large"`
	LSN           *string         `json:"lsn"`
	Xid           json.RawMessage `json:"xid"`
	Unchanged     []string        `json:"unchanged"`
}

// Decode parses and validates one encoded event as it travels in one
// message: a change, a manifest of a large change (Chunks set, no row
// images), or the mark of a change too large to publish (TooLarge set, no
// row images).
func Decode(data []byte) (Event, error) {
	return decode(data, MaxEventBytes, true)
}

// DecodeWhole parses and validates an event that does not travel as one
// message: one reassembled from its chunks, or one with a corrected row
// image. It may be up to MaxAssembledBytes, and cannot be a manifest or a
// mark.
func DecodeWhole(data []byte) (Event, error) {
	return decode(data, MaxAssembledBytes, false)
}

// decode parses and validates an encoded event of at most limit bytes;
// stand-ins (manifests and marks) are accepted only when standIns is set.
func decode(data []byte, limit int, standIns bool) (Event, error) {
	if len(data) > limit {
		return Event{}, invalid("", "event is %d bytes, limit is %d", len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var w wire
	if err := dec.Decode(&w); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Event{}, invalid(typeErr.Field, "want %s, got JSON %s", typeErr.Type, typeErr.Value)
		}
		return Event{}, invalid("", "%v", err)
	}
	if dec.More() {
		return Event{}, invalid("", "trailing data after the event object")
	}

	var ev Event
	var err error
	if w.Source != nil {
		ev.Source = *w.Source
	}
	if w.Epoch != nil && string(w.Epoch) != "null" {
		if ev.Epoch, err = integer("epoch", w.Epoch); err != nil {
			return Event{}, err
		}
	}
	if ev.ActionID, err = integer("action_id", w.ActionID); err != nil {
		return Event{}, err
	}
	if w.Table == nil || *w.Table == "" {
		return Event{}, invalid("table", "missing")
	}
	if ev.Table, err = NormalizeTable(*w.Table); err != nil {
		return Event{}, invalid("table", "%v", err)
	}
	if w.Op == nil {
		return Event{}, invalid("op", "missing")
	}
	switch op := Op(*w.Op); op {
	case OpInsert, OpUpdate, OpDelete, OpTruncate:
		ev.Op = op
	default:
		return Event{}, invalid("op", "unknown op %q (want insert, update, delete or truncate)", *w.Op)
	}
	if ev.Op == OpTruncate {
		for _, m := range []struct {
			name string
			raw  json.RawMessage
		}{{"key", w.Key}, {"after", w.After}, {"before", w.Before}, {"chunks", w.Chunks}, {"too_large", w.TooLarge}} {
			if len(m.raw) > 0 && string(m.raw) != "null" {
				return Event{}, invalid(m.name, "must be absent in a truncate")
			}
		}
	} else if ev.Key, ev.keyVals, err = object("key", w.Key, true); err != nil {
		return Event{}, err
	}
	if ev.Chunks, ev.TooLarge, err = standIn(w, standIns); err != nil {
		return Event{}, err
	}
	imageless := ev.Chunks != nil || ev.TooLarge != nil
	if ev.After, ev.afterVals, err = object("after", w.After, ev.Op != OpDelete && ev.Op != OpTruncate && !imageless); err != nil {
		return Event{}, err
	}
	if ev.Op == OpDelete && ev.After != nil {
		return Event{}, invalid("after", "must be absent for a delete")
	}
	if ev.Before, _, err = object("before", w.Before, false); err != nil {
		return Event{}, err
	}
	if imageless && (ev.After != nil || ev.Before != nil) {
		field := "after"
		if ev.After == nil {
			field = "before"
		}
		what := "a manifest (the row images travel in its chunks)"
		if ev.TooLarge != nil {
			what = "the mark of a change too large to publish"
		}
		return Event{}, invalid(field, "must be absent in %s", what)
	}
	if w.CommitTime == nil {
		return Event{}, invalid("commit_time", "missing")
	}
	if ev.CommitTime, err = time.Parse(time.RFC3339Nano, *w.CommitTime); err != nil {
		return Event{}, invalid("commit_time", "want an RFC 3339 timestamp, got %q", *w.CommitTime)
	}
	v, err := integer("schema_version", w.SchemaVersion)
	if err != nil {
		return Event{}, err
	}
	if v > CurrentSchemaVersion {
		return Event{}, invalid("schema_version", "unsupported version %d (this build reads 1..%d)", v, CurrentSchemaVersion)
	}
	ev.SchemaVersion = int(v)
	if ev.LSN, ev.Xid, ev.Unchanged, err = position(w, ev); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// position parses what log-based capture adds: the commit LSN, the
// transaction id, and the unchanged columns an update leaves out.
func position(w wire, ev Event) (string, uint32, []string, error) {
	var lsn string
	if w.LSN != nil {
		hi, lo, ok := strings.Cut(*w.LSN, "/")
		if !ok || !isHex(hi) || !isHex(lo) || len(hi) > 8 || len(lo) > 8 {
			return "", 0, nil, invalid("lsn", "want an LSN like 16/B374D848, got %q", *w.LSN)
		}
		lsn = *w.LSN
	}
	var xid uint32
	if len(w.Xid) > 0 && string(w.Xid) != "null" {
		n, err := integer("xid", w.Xid)
		if err != nil {
			return "", 0, nil, err
		}
		if n < 0 || n > math.MaxUint32 {
			return "", 0, nil, invalid("xid", "%d is not a transaction id", n)
		}
		xid = uint32(n)
	}
	if len(w.Unchanged) == 0 {
		return lsn, xid, nil, nil
	}
	if ev.Op != OpUpdate {
		return "", 0, nil, invalid("unchanged", "only an update leaves columns unchanged, this is a %s", ev.Op)
	}
	seen := map[string]bool{}
	for _, c := range w.Unchanged {
		_, inAfter := ev.afterVals[c]
		switch {
		case c == "":
			return "", 0, nil, invalid("unchanged", "an empty column name")
		case seen[c]:
			return "", 0, nil, invalid("unchanged", "column %q named twice", c)
		case inAfter:
			return "", 0, nil, invalid("unchanged", "column %q is also in after", c)
		}
		seen[c] = true
	}
	return lsn, xid, w.Unchanged, nil
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// standIn parses the members that make an event stand for another: chunks
// (a manifest) and too_large (the mark of a change capture parked).
func standIn(w wire, allowed bool) (*Chunks, *TooLarge, error) {
	hasChunks := len(w.Chunks) > 0 && string(w.Chunks) != "null"
	hasTooLarge := len(w.TooLarge) > 0 && string(w.TooLarge) != "null"
	switch {
	case !hasChunks && !hasTooLarge:
		return nil, nil, nil
	case !allowed && hasChunks:
		return nil, nil, invalid("chunks", "a reassembled event cannot be a manifest")
	case !allowed:
		return nil, nil, invalid("too_large", "a reassembled event cannot be a mark")
	case hasChunks && hasTooLarge:
		return nil, nil, invalid("chunks", "a manifest cannot also be marked too_large")
	case hasChunks:
		c, err := chunks(w.Chunks)
		return c, nil, err
	}
	var m struct{ Bytes, Limit json.RawMessage }
	if err := json.Unmarshal(w.TooLarge, &m); err != nil {
		return nil, nil, invalid("too_large", "want an object with bytes and limit")
	}
	bytes, err := integer("too_large.bytes", m.Bytes)
	if err != nil {
		return nil, nil, err
	}
	limit, err := integer("too_large.limit", m.Limit)
	if err != nil {
		return nil, nil, err
	}
	if bytes <= limit {
		return nil, nil, invalid("too_large", "bytes %d is within the limit %d", bytes, limit)
	}
	return nil, &TooLarge{Bytes: bytes, Limit: limit}, nil
}

func chunks(raw json.RawMessage) (*Chunks, error) {
	var m struct {
		Count, Bytes json.RawMessage
		SHA256       *string `json:"sha256"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("chunks", "want an object with count, bytes and sha256")
	}
	count, err := integer("chunks.count", m.Count)
	if err != nil {
		return nil, err
	}
	bytes, err := integer("chunks.bytes", m.Bytes)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes > MaxAssembledBytes:
		return nil, invalid("chunks.bytes", "%d exceeds the limit of a reassembled event, %d", bytes, MaxAssembledBytes)
	case count > bytes:
		return nil, invalid("chunks.count", "%d chunks cannot hold %d bytes", count, bytes)
	case m.SHA256 == nil:
		return nil, invalid("chunks.sha256", "missing")
	case !isSHA256(*m.SHA256):
		return nil, invalid("chunks.sha256", "want 64 lowercase hex digits, got %q", *m.SHA256)
	}
	return &Chunks{Count: int(count), Bytes: bytes, SHA256: *m.SHA256}, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// integer parses a positive JSON integer that fits in an int64.
func integer(field string, raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, invalid(field, "missing")
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n <= 0 {
		return 0, invalid(field, "want a positive 64-bit integer, got %s", raw)
	}
	return n, nil
}

// object checks that raw is a non-empty JSON object whose members are column
// names, and returns its members. JSON null counts as absent.
func object(field string, raw json.RawMessage, required bool) (json.RawMessage, map[string]json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		if required {
			return nil, nil, invalid(field, "missing")
		}
		return nil, nil, nil
	}
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cols); err != nil {
		return nil, nil, invalid(field, "want an object of column values")
	}
	if len(cols) == 0 {
		return nil, nil, invalid(field, "has no columns")
	}
	if _, ok := cols[""]; ok {
		return nil, nil, invalid(field, "empty column name")
	}
	return raw, cols, nil
}

// NormalizeTable returns the schema-qualified form of a table name:
// "employees" becomes "public.employees". Names are taken literally (no
// quoting or case folding); a name with more than two parts is rejected.
func NormalizeTable(name string) (string, error) {
	schema, table, ok := strings.Cut(name, ".")
	if !ok {
		schema, table = "public", name
	}
	if schema == "" || table == "" || strings.Contains(table, ".") {
		return "", fmt.Errorf("want schema.table, got %q", name)
	}
	return schema + "." + table, nil
}

// Encode returns the wire form of ev.
func Encode(ev Event) ([]byte, error) {
	return json.Marshal(ev)
}

// Batch is a JSON array of encoded events, as the starter received them.
// Workflows pass it on without decoding it; the apply activity decodes it.
type Batch []byte

// NewBatch joins encoded events into a Batch.
func NewBatch(encoded [][]byte) Batch {
	n := 2
	for _, e := range encoded {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, e := range encoded {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// Decode decodes and validates every event of the batch.
func (b Batch) Decode() ([]Event, error) {
	raws, err := b.Elements()
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(raws))
	for i, raw := range raws {
		ev, err := Decode(raw)
		if err != nil {
			return nil, fmt.Errorf("batch element %d: %w", i, err)
		}
		events[i] = ev
	}
	return events, nil
}

// Elements returns the encoded events of the batch, undecoded.
func (b Batch) Elements() ([]json.RawMessage, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	return raws, nil
}

// KeyDisagreement reports where a row image disagrees with a key: a key
// column the image lacks or holds another value in. A change whose image
// names another row than its key would write one row and version another.
// Values are compared as JSON values (1 equals 1.0), not as text.
func KeyDisagreement(key, after json.RawMessage) error {
	k, err := members(key)
	if err != nil {
		return fmt.Errorf("key: want an object of column values")
	}
	a, err := members(after)
	if err != nil {
		return fmt.Errorf("after: want an object of column values")
	}
	return disagreement(k, a)
}

func disagreement(k, a map[string]json.RawMessage) error {
	cols := make([]string, 0, len(k))
	for c := range k {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for _, c := range cols {
		v, ok := a[c]
		if !ok {
			return fmt.Errorf("after lacks key column %q", c)
		}
		if !sameJSON(k[c], v) {
			return fmt.Errorf("after has %s = %s, the key has %s", c, v, k[c])
		}
	}
	return nil
}

// sameJSON reports whether two JSON values are equal as values.
func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, erra := normalized(a)
	vb, errb := normalized(b)
	return erra == nil && errb == nil && reflect.DeepEqual(va, vb)
}

func normalized(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return canonicalNumbers(v), nil
}

// number is a JSON number in its exact rational form, told apart from a
// string of the same digits.
type number string

// canonicalNumbers replaces every number by its exact rational form.
func canonicalNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(string(x))
		if !ok {
			return number(x)
		}
		return number(r.RatString())
	case map[string]any:
		for k, e := range x {
			x[k] = canonicalNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = canonicalNumbers(e)
		}
	}
	return v
}
