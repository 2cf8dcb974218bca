package wal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// How a column's text (as pgoutput sends it) becomes JSON: the way the
// trigger capture's to_jsonb writes it, so that both modes give a row the
// same key text and the apply reads both alike.
type kind uint8

const (
	kindString  kind = iota // a JSON string of the text
	kindBool                // t/f -> true/false
	kindNumber              // int2/4/8, numeric: a JSON number when the text is one (not NaN, Infinity)
	kindFloat               // float4/8: a number as numeric prints it (1e+20 -> 100000000000000000000)
	kindJSON                // json, jsonb: the text itself
	kindStamp               // timestamp: "2026-01-02 03:04:05" -> "2026-01-02T03:04:05"
	kindStampTZ             // timestamptz: also "+00" -> "+00:00"
	kindArray               // a JSON array of the elements, each by its element type
)

// typeInfo is how one type's values are written.
type typeInfo struct {
	kind  kind
	elem  *typeInfo // of an array's elements
	delim byte      // an array's element delimiter
}

// types resolves column types (by OID) to how their values are written,
// reading pg_type for the ones it has not seen.
type types struct {
	pool *pgxpool.Pool
	mu   sync.Mutex
	byID map[uint32]*typeInfo
}

func newTypes(pool *pgxpool.Pool) *types { return &types{pool: pool, byID: map[uint32]*typeInfo{}} }

// Well-known type OIDs.
const (
	oidJSON        = 114
	oidJSONB       = 3802
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidInt2        = 21
	oidInt4        = 23
	oidInt8        = 20
	oidNumeric     = 1700
	oidFloat4      = 700
	oidFloat8      = 701
)

// info returns how values of the type oid are written: as strings when the
// type cannot be read (dropped since the change was made).
func (t *types) info(ctx context.Context, oid uint32) *typeInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	ti, err := t.resolve(ctx, oid, 0)
	if err != nil {
		return &typeInfo{kind: kindString}
	}
	return ti
}

func (t *types) resolve(ctx context.Context, oid uint32, depth int) (*typeInfo, error) {
	if ti, ok := t.byID[oid]; ok {
		return ti, nil
	}
	if depth > 8 {
		return nil, fmt.Errorf("type %d: domains or arrays nested too deep", oid)
	}
	var (
		typtype, category, delim string
		elem, base               uint32
	)
	err := t.pool.QueryRow(ctx, `SELECT typtype::text, typcategory::text, typdelim::text, typelem::int8, typbasetype::int8
		FROM pg_type WHERE oid = $1`, int64(oid)).Scan(&typtype, &category, &delim, &elem, &base)
	if err != nil {
		if err == pgx.ErrNoRows {
			return nil, fmt.Errorf("type %d is not in pg_type", oid)
		}
		return nil, fmt.Errorf("read type %d: %w", oid, err)
	}
	ti := &typeInfo{}
	switch {
	case typtype == "d": // a domain is written as its base type
		b, err := t.resolve(ctx, base, depth+1)
		if err != nil {
			return nil, err
		}
		ti = b
	case oid == oidJSON || oid == oidJSONB:
		ti.kind = kindJSON
	case oid == oidTimestamp:
		ti.kind = kindStamp
	case oid == oidTimestampTZ:
		ti.kind = kindStampTZ
	case category == "A" && elem != 0:
		e, err := t.resolve(ctx, elem, depth+1)
		if err != nil {
			return nil, err
		}
		ti.kind, ti.elem, ti.delim = kindArray, e, ','
		if delim != "" {
			ti.delim = delim[0]
		}
	case category == "B":
		ti.kind = kindBool
	case oid == oidInt2 || oid == oidInt4 || oid == oidInt8 || oid == oidNumeric:
		ti.kind = kindNumber
	case oid == oidFloat4 || oid == oidFloat8:
		ti.kind = kindFloat
	}
	t.byID[oid] = ti
	return ti, nil
}

// appendValue appends the JSON of one value given as text.
func appendValue(dst []byte, ti *typeInfo, text []byte) ([]byte, error) {
	switch ti.kind {
	case kindBool:
		switch string(text) {
		case "t":
			return append(dst, "true"...), nil
		case "f":
			return append(dst, "false"...), nil
		}
	case kindNumber:
		if isJSONNumber(text) {
			return append(dst, text...), nil
		}
	case kindFloat:
		if f, err := strconv.ParseFloat(string(text), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			s := strconv.FormatFloat(f, 'f', -1, 64)
			if s == "-0" {
				s = "0"
			}
			return append(dst, s...), nil
		}
	case kindJSON:
		if !json.Valid(text) {
			return nil, fmt.Errorf("a json value that is not JSON: %.40q", text)
		}
		return append(dst, text...), nil
	case kindStamp, kindStampTZ:
		body, bc := bytes.CutSuffix(text, []byte(" BC"))
		if i := bytes.IndexByte(body, ' '); i > 0 {
			s := slices.Clone(body)
			s[i] = 'T'
			if ti.kind == kindStampTZ {
				s = fullOffset(s)
			}
			if bc {
				s = append(s, " BC"...)
			}
			return appendString(dst, s), nil
		}
	case kindArray:
		if out, err := appendArray(dst, ti, text); err == nil {
			return out, nil
		}
		// Not an array literal (int2vector, oidvector print "1 2"): as text.
	}
	return appendString(dst, text), nil
}

// fullOffset writes a trailing UTC offset of hours alone ("+05") with its
// minutes ("+05:00"), as to_jsonb does.
func fullOffset(s []byte) []byte {
	n := len(s)
	if n >= 3 && (s[n-3] == '+' || s[n-3] == '-') && isDigit(s[n-2]) && isDigit(s[n-1]) {
		return append(s, ":00"...)
	}
	return s
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// isJSONNumber reports whether text is a number as JSON writes one.
func isJSONNumber(text []byte) bool {
	if len(text) == 0 {
		return false
	}
	s := string(text)
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" || !isDigit(s[0]) || (len(s) > 1 && s[0] == '0' && isDigit(s[1])) {
		return false
	}
	_, err := strconv.ParseFloat(string(text), 64)
	return err == nil || strings.Contains(err.Error(), "value out of range")
}

// appendString appends s as a JSON string escaped as jsonb prints one:
// quote, backslash and control characters only.
func appendString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendArray writes an array's text ({1,2,NULL}, {{a,b},{c,d}},
// {"x y","\"q\""}) as a JSON array of its elements.
func appendArray(dst []byte, ti *typeInfo, text []byte) ([]byte, error) {
	p := arrayParser{text: text, delim: ti.delim}
	if i := bytes.IndexByte(text, '='); len(text) > 0 && text[0] == '[' && i > 0 {
		p.pos = i + 1 // explicit bounds, [0:1]={...}: the elements alone
	}
	out, err := p.array(dst, ti.elem)
	if err != nil {
		return nil, fmt.Errorf("array %.60q: %w", text, err)
	}
	if p.pos != len(text) {
		return nil, fmt.Errorf("array %.60q: text after its end", text)
	}
	return out, nil
}

type arrayParser struct {
	text  []byte
	pos   int
	delim byte
}

func (p *arrayParser) array(dst []byte, elem *typeInfo) ([]byte, error) {
	if p.pos >= len(p.text) || p.text[p.pos] != '{' {
		return nil, fmt.Errorf("want { at %d", p.pos)
	}
	p.pos++
	dst = append(dst, '[')
	if p.pos < len(p.text) && p.text[p.pos] == '}' {
		p.pos++
		return append(dst, ']'), nil
	}
	for first := true; ; first = false {
		if !first {
			dst = append(dst, ", "...) // as jsonb prints arrays
		}
		var err error
		switch {
		case p.pos >= len(p.text):
			return nil, fmt.Errorf("ends inside")
		case p.text[p.pos] == '{':
			dst, err = p.array(dst, elem)
		case p.text[p.pos] == '"':
			var s []byte
			if s, err = p.quoted(); err == nil {
				dst, err = appendValue(dst, elem, s)
			}
		default:
			start := p.pos
			for p.pos < len(p.text) && p.text[p.pos] != p.delim && p.text[p.pos] != '}' {
				p.pos++
			}
			s := p.text[start:p.pos]
			if string(s) == "NULL" {
				dst = append(dst, "null"...)
			} else {
				dst, err = appendValue(dst, elem, s)
			}
		}
		if err != nil {
			return nil, err
		}
		if p.pos >= len(p.text) {
			return nil, fmt.Errorf("ends inside")
		}
		switch p.text[p.pos] {
		case '}':
			p.pos++
			return append(dst, ']'), nil
		case p.delim:
			p.pos++
		default:
			return nil, fmt.Errorf("unexpected %q at %d", p.text[p.pos], p.pos)
		}
	}
}

// quoted reads a double-quoted element, undoing its backslash escapes.
func (p *arrayParser) quoted() ([]byte, error) {
	p.pos++ // the opening quote
	var s []byte
	for p.pos < len(p.text) {
		c := p.text[p.pos]
		p.pos++
		switch c {
		case '\\':
			if p.pos >= len(p.text) {
				return nil, fmt.Errorf("ends inside an escape")
			}
			s = append(s, p.text[p.pos])
			p.pos++
		case '"':
			return s, nil
		default:
			s = append(s, c)
		}
	}
	return nil, fmt.Errorf("ends inside a quoted element")
}
