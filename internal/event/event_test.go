package event

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const valid = `{"action_id":7,"table":"public.employees","op":"update","key":{"emp_id":1},` +
	`"after":{"emp_id":1,"first_name":"Ada"},"before":{"emp_id":1,"first_name":"Ad"},` +
	`"commit_time":"2026-11-25T10:00:00.123456Z","schema_version":1}`

func TestDecodeValid(t *testing.T) {
	ev, err := Decode([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if ev.ActionID != 7 || ev.Table != "public.employees" || ev.Op != OpUpdate {
		t.Fatalf("decoded %+v", ev)
	}
	if string(ev.Key) != `{"emp_id":1}` || !strings.Contains(string(ev.After), `"Ada"`) {
		t.Fatalf("key %s after %s", ev.Key, ev.After)
	}
	if ev.CommitTime.Nanosecond() != 123456000 {
		t.Fatalf("commit time %v", ev.CommitTime)
	}
	// Round trip through Encode.
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(b)
	if err != nil {
		t.Fatalf("re-decode %s: %v", b, err)
	}
	if again.ActionID != ev.ActionID || string(again.After) != string(ev.After) || !again.CommitTime.Equal(ev.CommitTime) {
		t.Fatalf("round trip changed the event: %+v vs %+v", again, ev)
	}
}

func TestDecodeUnqualifiedTable(t *testing.T) {
	ev, err := Decode([]byte(strings.Replace(valid, `"public.employees"`, `"employees"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Table != "public.employees" {
		t.Fatalf("table %q", ev.Table)
	}
}

func TestDecodeDeleteWithoutAfter(t *testing.T) {
	ev, err := Decode([]byte(`{"action_id":8,"table":"public.employees","op":"delete","key":{"emp_id":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Op != OpDelete || ev.After != nil {
		t.Fatalf("decoded %+v", ev)
	}
}

// TestDecodeTruncate: a truncate names its table alone.
func TestDecodeTruncate(t *testing.T) {
	ev, err := Decode([]byte(`{"action_id":9,"table":"public.t","op":"truncate","commit_time":"2026-11-25T10:00:00Z","schema_version":1,"lsn":"0/16B3748"}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Op != OpTruncate || ev.Key != nil || ev.After != nil {
		t.Errorf("decoded %+v", ev)
	}
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b); err != nil {
		t.Errorf("round trip of %s: %v", b, err)
	}
}

// TestDecodeLogPosition: what log-based capture adds survives a round trip.
func TestDecodeLogPosition(t *testing.T) {
	in := strings.Replace(valid, `"action_id":7`, `"action_id":7,"lsn":"16/B374D848","xid":4294967295,"unchanged":["bio"]`, 1)
	ev, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if again.LSN != "16/B374D848" || again.Xid != 4294967295 || !slices.Equal(again.Unchanged, []string{"bio"}) {
		t.Errorf("round trip: lsn %q xid %d unchanged %v", again.LSN, again.Xid, again.Unchanged)
	}
}

func TestDecodeRejects(t *testing.T) {
	repl := func(old, new string) string { return strings.Replace(valid, old, new, 1) }
	cases := []struct {
		name, in, want string
	}{
		{"not json", `{"action_id":`, "invalid change event: unexpected EOF"},
		{"array", `[1,2]`, "invalid change event: want event.wire"},
		{"trailing", valid + `{}`, "trailing data"},
		{"missing action_id", repl(`"action_id":7,`, ``), "action_id: missing"},
		{"string action_id", repl(`"action_id":7`, `"action_id":"7"`), `action_id: want a positive 64-bit integer, got "7"`},
		{"fractional action_id", repl(`"action_id":7`, `"action_id":7.5`), "action_id: want a positive 64-bit integer, got 7.5"},
		{"negative action_id", repl(`"action_id":7`, `"action_id":-1`), "action_id: want a positive 64-bit integer, got -1"},
		{"huge action_id", repl(`"action_id":7`, `"action_id":92233720368547758070`), "action_id: want a positive 64-bit integer"},
		{"missing table", repl(`"table":"public.employees",`, ``), "table: missing"},
		{"three-part table", repl(`"public.employees"`, `"db.public.employees"`), `table: want schema.table, got "db.public.employees"`},
		{"numeric table", repl(`"public.employees"`, `12`), "table: want string, got JSON number"},
		{"missing op", repl(`"op":"update",`, ``), "op: missing"},
		{"unknown op", repl(`"update"`, `"upsert"`), `op: unknown op "upsert"`},
		{"missing key", repl(`"key":{"emp_id":1},`, ``), "key: missing"},
		{"null key", repl(`"key":{"emp_id":1}`, `"key":null`), "key: missing"},
		{"array key", repl(`"key":{"emp_id":1}`, `"key":[1]`), "key: want an object of column values"},
		{"empty key", repl(`"key":{"emp_id":1}`, `"key":{}`), "key: has no columns"},
		{"empty column", repl(`"key":{"emp_id":1}`, `"key":{"":1}`), "key: empty column name"},
		{"update without after", repl(`"after":{"emp_id":1,"first_name":"Ada"},`, ``), "after: missing"},
		{"string after", repl(`"after":{"emp_id":1,"first_name":"Ada"}`, `"after":"x"`), "after: want an object"},
		{"delete with after", repl(`"op":"update"`, `"op":"delete"`), "after: must be absent for a delete"},
		{"scalar before", repl(`"before":{"emp_id":1,"first_name":"Ad"}`, `"before":3`), "before: want an object"},
		{"missing commit_time", repl(`"commit_time":"2026-11-25T10:00:00.123456Z",`, ``), "commit_time: missing"},
		{"bad commit_time", repl(`2026-11-25T10:00:00.123456Z`, `yesterday`), `commit_time: want an RFC 3339 timestamp, got "yesterday"`},
		{"missing schema_version", repl(`,"schema_version":1`, ``), "schema_version: missing"},
		{"future schema_version", repl(`"schema_version":1`, `"schema_version":2`), "schema_version: unsupported version 2"},
		{"zero schema_version", repl(`"schema_version":1`, `"schema_version":0`), "schema_version: want a positive 64-bit integer, got 0"},
		{"oversized", `{"action_id":1,"pad":"` + strings.Repeat("x", MaxEventBytes) + `"}`, "limit is 1572864"},
		{"manifest with after", repl(`"schema_version":1`, `"schema_version":1,"chunks":`+chunksOK),
			"after: must be absent in a manifest (the row images travel in its chunks)"},
		{"manifest with before", manifest(`"before":{"emp_id":1},`), "before: must be absent in a manifest"},
		{"manifest of no chunks", manifestWith(`{"count":0,"bytes":900000,"sha256":"` + sum0 + `"}`),
			"chunks.count: want a positive 64-bit integer, got 0"},
		{"manifest of too many chunks", manifestWith(`{"count":10,"bytes":9,"sha256":"` + sum0 + `"}`),
			"chunks.count: 10 chunks cannot hold 9 bytes"},
		{"manifest of a string count", manifestWith(`{"count":"2","bytes":900000,"sha256":"` + sum0 + `"}`),
			`chunks.count: want a positive 64-bit integer, got "2"`},
		{"manifest without bytes", manifestWith(`{"count":2,"sha256":"` + sum0 + `"}`), "chunks.bytes: missing"},
		{"manifest of a huge event", manifestWith(`{"count":2,"bytes":999999999999,"sha256":"` + sum0 + `"}`),
			"chunks.bytes: 999999999999 exceeds the limit of a reassembled event"},
		{"manifest without sha256", manifestWith(`{"count":2,"bytes":900000}`), "chunks.sha256: missing"},
		{"manifest with a short sha256", manifestWith(`{"count":2,"bytes":900000,"sha256":"abc"}`),
			`chunks.sha256: want 64 lowercase hex digits, got "abc"`},
		{"manifest as an array", manifestWith(`[2]`), "chunks: want an object with count, bytes and sha256"},
		{"manifest marked too large", manifest(`"too_large":{"bytes":9,"limit":8},`), "chunks: a manifest cannot also be marked too_large"},
		{"mark within the limit", mark(`{"bytes":8,"limit":8}`), "too_large: bytes 8 is within the limit 8"},
		{"mark without a limit", mark(`{"bytes":8}`), "too_large.limit: missing"},
		{"malformed lsn", repl(`"action_id":7`, `"action_id":7,"lsn":"16-B374"`), `lsn: want an LSN like 16/B374D848, got "16-B374"`},
		{"lsn of too many digits", repl(`"action_id":7`, `"action_id":7,"lsn":"1/123456789"`), `lsn: want an LSN like`},
		{"negative xid", repl(`"action_id":7`, `"action_id":7,"xid":-3`), "xid: want a positive 64-bit integer, got -3"},
		{"xid beyond 32 bits", repl(`"action_id":7`, `"action_id":7,"xid":4294967296`), "xid: 4294967296 is not a transaction id"},
		{"unchanged on a delete", strings.Replace(repl(`"op":"update"`, `"op":"delete"`), `"after":{"emp_id":1,"first_name":"Ada"},`, `"unchanged":["bio"],`, 1),
			"unchanged: only an update leaves columns unchanged, this is a delete"},
		{"unchanged also in after", repl(`"action_id":7`, `"action_id":7,"unchanged":["first_name"]`), `unchanged: column "first_name" is also in after`},
		{"unchanged twice", repl(`"action_id":7`, `"action_id":7,"unchanged":["bio","bio"]`), `unchanged: column "bio" named twice`},
		{"truncate with a key", `{"action_id":9,"table":"public.t","op":"truncate","key":{"id":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`,
			"key: must be absent in a truncate"},
		{"truncate with a row", `{"action_id":9,"table":"public.t","op":"truncate","after":{"id":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`,
			"after: must be absent in a truncate"},
		{"mark with an image", strings.Replace(mark(`{"bytes":9,"limit":8}`), `"op":"insert",`, `"op":"insert","after":{"emp_id":1},`, 1),
			"after: must be absent in the mark of a change too large to publish"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.in))
			if err == nil {
				t.Fatalf("accepted %s", c.in)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// sum0 is a well-formed SHA-256 (of nothing).
const sum0 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

const chunksOK = `{"count":2,"bytes":900000,"sha256":"` + sum0 + `"}`

// manifest returns a manifest of an insert with extra members spliced in.
func manifest(extra string) string {
	return `{"action_id":9,"table":"public.employees","op":"insert","key":{"emp_id":1},` + extra +
		`"commit_time":"2026-11-25T10:00:00Z","schema_version":1,"chunks":` + chunksOK + `}`
}

// manifestWith returns a manifest whose chunks member is chunks.
func manifestWith(chunks string) string {
	return strings.Replace(manifest(""), chunksOK, chunks, 1)
}

// mark returns the mark of an insert too large to publish.
func mark(tooLarge string) string {
	return `{"action_id":9,"table":"public.employees","op":"insert","key":{"emp_id":1},` +
		`"commit_time":"2026-11-25T10:00:00Z","schema_version":1,"too_large":` + tooLarge + `}`
}

// TestDecodeStandIns: a manifest and a mark carry no row image, even for an
// insert, and decode with everything else checked as in any event.
func TestDecodeStandIns(t *testing.T) {
	ev, err := Decode([]byte(manifest("")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Chunks{Count: 2, Bytes: 900000, SHA256: sum0}
	if ev.Op != OpInsert || ev.After != nil || ev.TooLarge != nil || *ev.Chunks != *want {
		t.Fatalf("decoded %+v, chunks %+v", ev, ev.Chunks)
	}
	ev, err = Decode([]byte(mark(`{"bytes":9437184,"limit":8388608}`)))
	if err != nil {
		t.Fatal(err)
	}
	if ev.After != nil || ev.Chunks != nil || *ev.TooLarge != (TooLarge{Bytes: 9437184, Limit: 8388608}) {
		t.Fatalf("decoded %+v, too_large %+v", ev, ev.TooLarge)
	}
	// The rest of the envelope is checked as in any event.
	if _, err := Decode([]byte(strings.Replace(manifest(""), `"op":"insert"`, `"op":"upsert"`, 1))); err == nil ||
		!strings.Contains(err.Error(), `op: unknown op "upsert"`) {
		t.Fatalf("a manifest with a bad op: %v", err)
	}
	if _, err := Decode([]byte(strings.Replace(manifest(""), `"key":{"emp_id":1},`, ``, 1))); err == nil ||
		!strings.Contains(err.Error(), "key: missing") {
		t.Fatalf("a manifest without a key: %v", err)
	}
	// A reassembled event is a change, never a stand-in.
	if _, err := DecodeWhole([]byte(manifest(""))); err == nil || !strings.Contains(err.Error(), "chunks: a reassembled event cannot be a manifest") {
		t.Fatalf("DecodeWhole of a manifest: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(`{"action_id":8,"table":"t","op":"delete","key":{"k":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`))
	f.Add([]byte(`{"action_id":1e3}`))
	f.Add([]byte(`null`))
	f.Add([]byte(manifest("")))
	f.Add([]byte(mark(`{"bytes":9,"limit":8}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever is accepted must be a complete event that survives a round trip.
		standIn := ev.Chunks != nil || ev.TooLarge != nil
		if ev.ActionID <= 0 || ev.Table == "" || ev.Key == nil || (ev.Op != OpDelete && ev.After == nil && !standIn) ||
			(standIn && (ev.After != nil || ev.Before != nil)) {
			t.Fatalf("accepted an incomplete event %+v from %q", ev, data)
		}
		b, err := Encode(ev)
		if err != nil {
			t.Fatalf("encode accepted event: %v", err)
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
	})
}

func TestKeyDisagreement(t *testing.T) {
	cases := []struct{ key, after, want string }{
		{`{"emp_id":504}`, `{"emp_id":504,"city":"Oslo"}`, ""},
		{`{"emp_id":504}`, `{"emp_id":504.0}`, ""},
		{`{"id":"é","n":1}`, `{"n":1,"id":"\u00e9"}`, ""},
		{`{"emp_id":504}`, `{"emp_id":999,"city":"Oslo"}`, `after has emp_id = 999, the key has 504`},
		{`{"emp_id":504}`, `{"city":"Oslo"}`, `after lacks key column "emp_id"`},
		{`{"a":1,"b":2}`, `{"a":1,"b":"2"}`, `after has b = "2", the key has 2`},
		{`{"a":1}`, `[1]`, `after: want an object of column values`},
	}
	for _, c := range cases {
		err := KeyDisagreement(json.RawMessage(c.key), json.RawMessage(c.after))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("KeyDisagreement(%s, %s) = %q, want %q", c.key, c.after, got, c.want)
		}
	}
}
