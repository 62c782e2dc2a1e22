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

type key string

func TestMap(t *testing.T) {
	for _, m := range []map[key][]string{{}, {"b": {"1"}, "a": nil, "<&>": {"x"}}, {"k\xff": {}, "é": {"2", "3"}}} {
		want, _ := json.Marshal(m)
		got, err := Map(nil, m, nil, func(dst []byte, v []string) ([]byte, error) { return Strings(dst, v), nil })
		if err != nil || string(got) != string(want) {
			t.Errorf("Map(%q) = %s (%v), want %s", m, got, err, want)
		}
	}
	m := map[string]time.Time{"late": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "dropped": {}, "bad": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	got, err := Map(nil, m, func(k string) bool { return k == "late" }, Time)
	if want := `{"late":"2026-01-01T00:00:00Z"}`; err != nil || string(got) != want {
		t.Errorf("Map keeping one key = %s (%v), want %s", got, err, want)
	}
	if _, err := Map(nil, m, nil, Time); err == nil {
		t.Error("Map with a time encoding/json refuses: no error")
	}
}
