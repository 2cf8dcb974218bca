package wal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	kindNumber              // a JSON number when the text is one (not NaN, Infinity, money)
	kindJSON                // json, jsonb: the text itself
	kindStamp               // timestamp: "2026-01-02 03:04:05" -> "2026-01-02T03:04:05"
	kindStampTZ             // timestamptz: also "+00" -> "+00:00"
	kindTimeTZ              // timetz: "03:04:05+00" -> "03:04:05+00:00"
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
	oidTimeTZ      = 1266
)

// info returns how values of the type oid are written.
func (t *types) info(ctx context.Context, oid uint32) (*typeInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resolve(ctx, oid, 0)
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
	case oid == oidTimeTZ:
		ti.kind = kindTimeTZ
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
	case category == "N":
		ti.kind = kindNumber
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
	case kindJSON:
		if !json.Valid(text) {
			return nil, fmt.Errorf("a json value that is not JSON: %.40q", text)
		}
		return append(dst, text...), nil
	case kindStamp, kindStampTZ:
		if i := bytes.IndexByte(text, ' '); i > 0 && !bytes.HasSuffix(text, []byte(" BC")) {
			s := slices.Clone(text)
			s[i] = 'T'
			if ti.kind == kindStampTZ {
				s = fullOffset(s)
			}
			return appendString(dst, s), nil
		}
	case kindTimeTZ:
		return appendString(dst, fullOffset(slices.Clone(text))), nil
	case kindArray:
		return appendArray(dst, ti, text)
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
