package cdc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Offsets are Kafka offsets in ascending order. In JSON they read as
// ranges, "1000-1999,2005", so that a batch's input in the Web UI is a
// line rather than one line per event; a JSON array of numbers is read too.
type Offsets []int64

// String renders the offsets as comma-separated ranges.
func (o Offsets) String() string {
	var b strings.Builder
	for i := 0; i < len(o); {
		j := i
		for j+1 < len(o) && o[j+1] == o[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(o[i], 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatInt(o[j], 10))
		}
		i = j + 1
	}
	return b.String()
}

// MarshalJSON writes the offsets as a string of ranges.
func (o Offsets) MarshalJSON() ([]byte, error) { return json.Marshal(o.String()) }

// UnmarshalJSON reads a string of ranges or an array of offsets.
func (o *Offsets) UnmarshalJSON(b []byte) error {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) {
		var list []int64
		if err := json.Unmarshal(b, &list); err != nil {
			return err
		}
		*o = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("offsets: want ranges such as \"10-19,25\": %w", err)
	}
	out, err := ParseOffsets(s)
	if err != nil {
		return err
	}
	*o = out
	return nil
}

// maxOffsets bounds how many offsets ParseOffsets expands in memory: far
// more than a batch holds.
const maxOffsets = 1 << 20

// ParseOffsets reads offsets written as ranges, "1000-1999,2005".
func ParseOffsets(s string) (Offsets, error) {
	if s == "" {
		return nil, nil
	}
	var out Offsets
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("offsets %q: %q is not an offset", s, lo)
		}
		last := first
		if isRange {
			if last, err = strconv.ParseInt(hi, 10, 64); err != nil {
				return nil, fmt.Errorf("offsets %q: %q is not an offset", s, hi)
			}
		}
		if last < first || (len(out) > 0 && first <= out[len(out)-1]) {
			return nil, fmt.Errorf("offsets %q: %q is not an ascending range", s, part)
		}
		if last-first >= maxOffsets-int64(len(out)) {
			return nil, fmt.Errorf("offsets %q: more than %d offsets", s, maxOffsets)
		}
		for n := first; ; n++ {
			out = append(out, n)
			if n == last {
				break
			}
		}
	}
	return out, nil
}
