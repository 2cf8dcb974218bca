package cdc

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestOffsetsReadAsRanges(t *testing.T) {
	for _, c := range []struct {
		offsets Offsets
		want    string
	}{
		{nil, `""`},
		{Offsets{7}, `"7"`},
		{Offsets{1000, 1001, 1002, 1005, 1007, 1008}, `"1000-1002,1005,1007-1008"`},
	} {
		b, err := json.Marshal(c.offsets)
		if err != nil || string(b) != c.want {
			t.Errorf("%v: %s (%v), want %s", c.offsets, b, err, c.want)
		}
		var back Offsets
		if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back, c.offsets) {
			t.Errorf("%s read back as %v (%v)", b, back, err)
		}
	}
	// A batch input recorded with an array of offsets reads the same.
	var in BatchInput
	if err := json.Unmarshal([]byte(`{"offsets":[4,5,9]}`), &in); err != nil || !slices.Equal(in.Offsets, Offsets{4, 5, 9}) {
		t.Fatalf("array of offsets: %v (%v)", in.Offsets, err)
	}
	for _, bad := range []string{`"9-4"`, `"4,4"`, `"x"`, `"1-"`, `"5,3"`, `"0-99999999999"`, `7`,
		`"9223372036854775807-9223372036854775807,0"`, `"0-600000,700000-1300000"`} {
		var o Offsets
		if err := json.Unmarshal([]byte(bad), &o); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want a one-line error", bad, err)
		}
	}
}
