package event

import (
	"encoding/json"
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

func FuzzDecode(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(`{"action_id":8,"table":"t","op":"delete","key":{"k":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`))
	f.Add([]byte(`{"action_id":1e3}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever is accepted must be a complete event that survives a round trip.
		if ev.ActionID <= 0 || ev.Table == "" || ev.Key == nil || (ev.Op != OpDelete && ev.After == nil) {
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
