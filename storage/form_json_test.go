package storage

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"testing"
)

// reflectedForm is what the stored form was before appendSanitizedForm:
// encoding/json's encoding of the form without the secret fields.
func reflectedForm(form url.Values) (string, error) {
	out := make(url.Values, len(form))
	for k, v := range form {
		out[k] = v
	}
	for _, k := range secretFormFields {
		delete(out, k)
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func TestAppendSanitizedForm(t *testing.T) {
	many := url.Values{}
	for i := range 40 {
		many.Set(fmt.Sprintf("k%02d", 39-i), fmt.Sprint(i))
	}
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"nil", nil},
		{"empty", url.Values{}},
		{"client_credentials", url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read docs:write"}, "organization": {"acme"}}},
		{"secrets only", url.Values{"client_secret": {"s"}, "subject_token": {"t"}, "code_verifier": {"v"}}},
		{"secrets among others", url.Values{"grant_type": {"authorization_code"}, "code": {"c"}, "redirect_uri": {"https://app.example/cb?a=1&b=2"}, "refresh_token": {"r"}}},
		{"nil and empty values", url.Values{"a": nil, "b": {}, "c": {""}}},
		{"several values", url.Values{"resource": {"https://a.example/", "https://b.example/"}}},
		{"escaping", url.Values{"q\"k": {`back\slash`, "<script>&amp;", "line\nbreak\t\r\b\f\x01\x1f", "\x7f"}}},
		{"unicode", url.Values{"näme": {"ünïcödé", "\u2028\u2029", "日本"}}},
		{"invalid utf-8", url.Values{"k\xff": {"\xc3\x28", "a\xe2\x82"}}},
		{"many keys", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := reflectedForm(tc.form)
			got := appendSanitizedForm(nil, tc.form)
			if wantErr != nil || string(got) != want {
				t.Fatalf("got %s, want %s (%v)", got, want, wantErr)
			}
		})
	}
}

func FuzzAppendSanitizedForm(f *testing.F) {
	f.Add("grant_type", "client_credentials", "client_secret", "s3cr3t")
	f.Add("a<b", "x\"y\\z\n", "code", "\xff")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		form := url.Values{k1: {v1, v2}, k2: {v2}}
		want, wantErr := reflectedForm(form)
		got := appendSanitizedForm(nil, form)
		if wantErr != nil || string(got) != want {
			t.Fatalf("got %s, want %s (%v)", got, want, wantErr)
		}
	})
}

// checkDecodeForm compares decodeForm with json.Unmarshal into the
// url.Values{} toRequest starts from.
func checkDecodeForm(t *testing.T, data string) {
	t.Helper()
	want := url.Values{}
	wantErr := json.Unmarshal([]byte(data), &want)
	got := url.Values{}
	err := decodeForm(data, &got)
	if (err != nil) != (wantErr != nil) || err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeForm(%q) = %#v (%v), json.Unmarshal gives %#v (%v)", data, got, err, want, wantErr)
	}
}

func TestDecodeForm(t *testing.T) {
	for _, data := range []string{
		`{}`, `null`, ``, `{`, `{"a":["b"]}`, `{"a":["b","c"],"d":[]}`, `{"a":null}`, `{"a":nul}`,
		`{"a":null,"b":[""]}`, `{"a":["b"],"a":["c"]}`, `{"a":["b"]} `, ` {"a":["b"]}`, `{"a": ["b"]}`,
		`{"a":["b"],}`, `{"a":["b",]}`, `{"a":"b"}`, `{"a":[1]}`, `{"a":["\u003c"]}`, `{"a":["é"]}`,
		`{"a":["\xff"]}`, "{\"a\":[\"\xff\"]}", `{"a":["b"]}x`, `[]`, `{"a":["b"]`, `{"a"`, `{"a":`,
	} {
		t.Run(data, func(t *testing.T) { checkDecodeForm(t, data) })
	}
	// What appendSanitizedForm writes decodes to the form without its
	// secrets.
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read docs:write"}, "a": nil, "b": {},
		"esc": {"<\"\\\n>"}, "client_secret": {"s"}}
	checkDecodeForm(t, string(appendSanitizedForm(nil, form)))
}

func FuzzDecodeForm(f *testing.F) {
	f.Add(`{"grant_type":["client_credentials"],"organization":["acme"],"scope":["docs:read"]}`)
	f.Add(`{"a":null,"b":[],"c":["\u003c"]}`)
	f.Fuzz(checkDecodeForm)
}

// checkStringList compares stringList's Scan, from either kind of column
// value, with json.Unmarshal into a []string.
func checkStringList(t *testing.T, data string) {
	t.Helper()
	var want []string
	wantErr := json.Unmarshal([]byte(data), &want)
	for _, src := range []any{data, []byte(data)} {
		got := stringList{"left", "over"}
		err := got.Scan(src)
		if (err != nil) != (wantErr != nil) || err == nil && !reflect.DeepEqual([]string(got), want) {
			t.Fatalf("Scan(%T %q) = %#v (%v), json.Unmarshal gives %#v (%v)", src, data, got, err, want, wantErr)
		}
	}
}

func TestStringList(t *testing.T) {
	for _, v := range [][]string{nil, {}, {""}, {"docs:read"}, {"docs:read", "docs:write"}, {"<&>", `q"b\`, "é", "\xff", "\u2028"}} {
		want, err := json.Marshal(v)
		if v == nil {
			want = []byte("[]") // a nil list is stored as an empty one
		}
		got, gotErr := stringList(v).Value()
		if err != nil || gotErr != nil || got != string(want) {
			t.Errorf("Value(%#v) = %v (%v), want %s", v, got, gotErr, want)
		}
		checkStringList(t, got.(string))
	}
	for _, data := range []string{`[]`, `null`, `["a"]`, `["a","b"]`, `[ "a"]`, `["a",]`, `["a"`, `["a"] `, `[1]`, `["\u003c"]`, `"a"`, ``, `[null]`, `nul`} {
		t.Run(data, func(t *testing.T) { checkStringList(t, data) })
	}
}

func FuzzStringList(f *testing.F) {
	f.Add(`["docs:read","docs:write"]`)
	f.Add(`["\u003c",null]`)
	f.Fuzz(checkStringList)
}
