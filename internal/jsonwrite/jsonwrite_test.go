package jsonwrite

import (
	"encoding/json"
	"testing"
	"time"
)

func TestString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<&>", "\n\r\t\b\f\x00\x1f\x7f",
		"ünïcödé", "\u2028\u2029", "\xff\xc3\x28", "日本"} {
		want, _ := json.Marshal(s)
		if got := String(nil, s); string(got) != string(want) {
			t.Errorf("String(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, v := range [][]string{nil, {}, {""}, {"a", "<b>"}} {
		want, _ := json.Marshal(v)
		if got := Strings(nil, v); string(got) != string(want) {
			t.Errorf("Strings(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestTime(t *testing.T) {
	for _, tm := range []time.Time{
		{},
		time.Date(2026, 12, 2, 8, 42, 45, 949813200, time.UTC),
		time.Date(2026, 12, 2, 8, 42, 45, 0, time.FixedZone("x", -7*3600-30*60)),
		time.Date(2026, 12, 2, 8, 42, 45, 1, time.Local),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600)),
		time.Now(), // with a monotonic reading
	} {
		want, wantErr := tm.MarshalJSON()
		got, err := Time(nil, tm)
		if (err != nil) != (wantErr != nil) || string(got) != string(want) {
			t.Errorf("Time(%v) = %s (%v), want %s (%v)", tm, got, err, want, wantErr)
		}
	}
}
