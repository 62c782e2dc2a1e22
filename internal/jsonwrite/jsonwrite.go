// Package jsonwrite appends JSON values to a byte slice exactly as
// encoding/json writes them, for the few encodings on the token path whose
// reflection and intermediate copies were a measurable share of a token's
// allocations. Anything unusual is handed to encoding/json itself, so the
// bytes cannot differ from it; the callers' tests compare with it.
package jsonwrite

import (
	"encoding/json"
	"slices"
	"time"
)

// String appends s as encoding/json quotes it (HTML-safe). Only printable
// ASCII that encoding/json writes as is takes the short path; quotes,
// backslashes, control characters, <, >, &, non-ASCII and invalid UTF-8 go
// through encoding/json.
func String(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			// A string always encodes.
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// Strings appends a []string: null when nil, as encoding/json does.
func Strings(dst []byte, v []string) []byte {
	if v == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range v {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = String(dst, s)
	}
	return append(dst, ']')
}

// Time appends t as time.Time.MarshalJSON does, without its allocation.
// The error is MarshalJSON's (a year outside [0,9999], an offset of a day
// or more).
func Time(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, '"')
	dst, err := t.AppendText(dst)
	if err != nil {
		return nil, err
	}
	return append(dst, '"'), nil
}

// Map appends m, not nil, as encoding/json writes a map with string keys:
// keys sorted, each value appended by value. Keys keep reports false for
// are left out (nil keeps every key). The error is value's.
func Map[K ~string, V any](dst []byte, m map[K]V, keep func(K) bool, value func([]byte, V) ([]byte, error)) ([]byte, error) {
	var keyBuf [16]K
	keys := keyBuf[:0]
	for k := range m {
		if keep == nil || keep(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = String(dst, string(k))
		dst = append(dst, ':')
		var err error
		if dst, err = value(dst, m[k]); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}
