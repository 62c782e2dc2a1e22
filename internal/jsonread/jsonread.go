// Package jsonread reads back the compact, escape-free, ASCII JSON that
// deputy writes (internal/jsonwrite) without encoding/json's reflection,
// its strings sharing the text's memory. Every method reports false at the
// first thing it does not expect, and the caller then hands the whole text
// to encoding/json, so what is read can never differ from what
// encoding/json would have read; the callers' tests compare the two.
package jsonread

import (
	"strings"
	"time"
)

// Reader reads one JSON text from the start.
type Reader struct {
	s string
	i int
}

// New returns a Reader of s.
func New(s string) Reader { return Reader{s: s} }

// Done reports whether the whole text was read.
func (p *Reader) Done() bool { return p.i == len(p.s) }

// Next consumes c if it comes next.
func (p *Reader) Next(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// Literal consumes lit (punctuation, a key with its colon, null) if it
// comes next.
func (p *Reader) Literal(lit string) bool {
	if strings.HasPrefix(p.s[p.i:], lit) {
		p.i += len(lit)
		return true
	}
	return false
}

// Str reads a string without escapes or characters outside printable
// ASCII.
func (p *Reader) Str() (string, bool) {
	if !p.Next('"') {
		return "", false
	}
	for j := p.i; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			v := p.s[p.i:j]
			p.i = j + 1
			return v, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
	}
	return "", false
}

// Strings reads ["value",...] (an empty array is an empty slice) or null
// (nil), as json.Unmarshal fills a []string.
func (p *Reader) Strings() ([]string, bool) {
	if p.Literal("null") {
		return nil, true
	}
	if !p.Next('[') {
		return nil, false
	}
	vals := []string{}
	if p.Next(']') {
		return vals, true
	}
	for {
		v, ok := p.Str()
		if !ok {
			return nil, false
		}
		vals = append(vals, v)
		if p.Next(']') {
			return vals, true
		}
		if !p.Next(',') {
			return nil, false
		}
	}
}

// Time reads a time as time.Time's UnmarshalJSON does (RFC 3339 in a
// string).
func (p *Reader) Time() (time.Time, bool) {
	var t time.Time
	v, ok := p.Str()
	if !ok || t.UnmarshalText([]byte(v)) != nil {
		return time.Time{}, false
	}
	return t, true
}
