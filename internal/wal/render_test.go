package wal

import (
	"context"
	"strings"
	"testing"
)

func TestAppendValue(t *testing.T) {
	text := &typeInfo{kind: kindString}
	num := &typeInfo{kind: kindNumber}
	tests := []struct {
		ti   *typeInfo
		in   string
		want string
	}{
		{&typeInfo{kind: kindBool}, "t", "true"},
		{&typeInfo{kind: kindBool}, "f", "false"},
		{num, "12.50", "12.50"},
		{num, "-0.5", "-0.5"},
		{num, "1e+30", "1e+30"},
		{num, "NaN", `"NaN"`},
		{num, "Infinity", `"Infinity"`},
		{num, "007", `"007"`},
		{text, "tab\there \"q\" \\ \x01", `"tab\there \"q\" \\ \u0001"`},
		{text, "żółw <&>", `"żółw <&>"`},
		{&typeInfo{kind: kindStampTZ}, "2026-11-26 08:00:00.123+00", `"2026-11-26T08:00:00.123+00:00"`},
		{&typeInfo{kind: kindStampTZ}, "2026-11-26 08:00:00+05:30", `"2026-11-26T08:00:00+05:30"`},
		{&typeInfo{kind: kindStampTZ}, "infinity", `"infinity"`},
		{&typeInfo{kind: kindStamp}, "2026-11-26 08:00:00", `"2026-11-26T08:00:00"`},
		{&typeInfo{kind: kindString}, "08:00:00-03", `"08:00:00-03"`}, // timetz: to_jsonb keeps its offset as printed
		{&typeInfo{kind: kindStamp}, "0044-03-15 12:00:00 BC", `"0044-03-15T12:00:00 BC"`},
		{&typeInfo{kind: kindStampTZ}, "0044-03-15 12:00:00+00 BC", `"0044-03-15T12:00:00+00:00 BC"`},
		{&typeInfo{kind: kindFloat}, "1e+20", "100000000000000000000"},
		{&typeInfo{kind: kindFloat}, "1e-07", "0.0000001"},
		{&typeInfo{kind: kindFloat}, "-0", "0"},
		{&typeInfo{kind: kindFloat}, "0.1", "0.1"},
		{&typeInfo{kind: kindFloat}, "NaN", `"NaN"`},
		{&typeInfo{kind: kindFloat}, "-Infinity", `"-Infinity"`},
		{&typeInfo{kind: kindArray, elem: num, delim: ','}, "1 2", `"1 2"`}, // int2vector: not an array literal, as text
		{&typeInfo{kind: kindJSON}, `{"a": [1, 2]}`, `{"a": [1, 2]}`},
		{&typeInfo{kind: kindArray, elem: num, delim: ','}, "{}", "[]"},
		{&typeInfo{kind: kindArray, elem: num, delim: ','}, "{{1,2},{NULL,4}}", "[[1, 2], [null, 4]]"},
		{&typeInfo{kind: kindArray, elem: text, delim: ','}, `{a,"b,c","NULL","q\"\\",NULL}`, `["a", "b,c", "NULL", "q\"\\", null]`},
		{&typeInfo{kind: kindArray, elem: text, delim: ';'}, `{(0,0),(1,1);(2,2),(3,3)}`, `["(0,0),(1,1)", "(2,2),(3,3)"]`},
		{&typeInfo{kind: kindArray, elem: num, delim: ','}, "[0:1]={5,6}", "[5, 6]"},
	}
	for _, tt := range tests {
		got, err := appendValue(nil, tt.ti, []byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("%q (kind %d): %s, %v; want %s", tt.in, tt.ti.kind, got, err, tt.want)
		}
	}
}

// TestAppendValueOfMalformedText: text that is not an array literal is
// written as a string (the stream goes on); json that is not JSON is an
// error.
func TestAppendValueOfMalformedText(t *testing.T) {
	arr := &typeInfo{kind: kindArray, elem: &typeInfo{}, delim: ','}
	for _, in := range []string{"{1,2", "{1,2}x", `{"a}`, "1,2", `{"a\`} {
		if _, err := appendArray(nil, arr, []byte(in)); err == nil {
			t.Errorf("array %q parsed", in)
		}
		if got, err := appendValue(nil, arr, []byte(in)); err != nil || string(got) != string(appendString(nil, []byte(in))) {
			t.Errorf("array %q: %s, %v; want it as a string", in, got, err)
		}
	}
	if _, err := appendValue(nil, &typeInfo{kind: kindJSON}, []byte("{nope")); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("bad json: %v", err)
	}
}

func TestDecodeRefusesMalformedMessages(t *testing.T) {
	d := NewDecoder(nil, nil)
	for _, tt := range []struct {
		data []byte
		want string
	}{
		{[]byte{'I', 0, 0, 0, 9, 'N', 0, 0, 0}, "a change of relation 9 outside a transaction"},
		{[]byte{'I', 0, 0}, "parse pgoutput message"},
		{[]byte{'C', 0}, "parse pgoutput message"},
		{[]byte{'Z'}, "parse pgoutput message"},
	} {
		if err := d.Decode(context.Background(), tt.data, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.data, err, tt.want)
		}
	}
}
