package flows

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"
)

// filled sets every exported field of the struct v points to a non-zero
// value of its type, recursing into struct pointers, and leaves maps nil
// (a session with extra claims or headers takes the reflective path).
func filled(t *testing.T, v reflect.Value, text string) {
	t.Helper()
	ts := time.Date(2026, 12, 2, 8, 42, 45, 949813200, time.UTC)
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		switch {
		case f.Type() == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(ts.Add(time.Duration(i) * time.Hour)))
		case f.Kind() == reflect.String:
			f.SetString(text + v.Type().Field(i).Name)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			f.Set(reflect.ValueOf([]string{text + "one", "two"}))
		case f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct:
			f.Set(reflect.New(f.Type().Elem()))
			filled(t, f.Elem(), text)
		case f.Kind() == reflect.Struct:
			filled(t, f, text)
		case f.Kind() == reflect.Map:
		default:
			t.Fatalf("field %s.%s of kind %s: teach this test (and Session.MarshalJSON) about it", v.Type(), v.Type().Field(i).Name, f.Kind())
		}
	}
}

// sessionCases are the sessions the JSON tests encode and decode.
func sessionCases(t *testing.T) []struct {
	name string
	s    *Session
} {
	full := func(text string) *Session {
		s := &Session{}
		filled(t, reflect.ValueOf(s).Elem(), text)
		s.ExpiresAt = map[fosite.TokenType]time.Time{
			fosite.RefreshToken:  time.Unix(1_800_000_000, 5).UTC(),
			fosite.AccessToken:   time.Unix(1_800_000_000, 0).In(time.FixedZone("x", 3600)),
			fosite.AuthorizeCode: {},
		}
		return s
	}
	expiring := NewSession("alice", "acme")
	expiring.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	noOrg := NewSession("alice", "")
	noOrg.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	extraClaims := NewSession("alice", "acme")
	extraClaims.Claims.Extra = map[string]any{"k": "v"}
	extraHeaders := NewSession("alice", "acme")
	extraHeaders.Headers.Extra = map[string]any{}
	bare := &Session{Organization: "acme"}
	emptyExpiry := NewSession("", "")
	emptyExpiry.ExpiresAt = map[fosite.TokenType]time.Time{}
	farYear := NewSession("alice", "acme")
	farYear.Claims.AuthTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	farExpiry := NewSession("alice", "acme")
	farExpiry.SetExpiresAt(fosite.AccessToken, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))
	return []struct {
		name string
		s    *Session
	}{
		{"new", NewSession("alice", "acme")},
		{"expiring", expiring},
		{"without organization", noOrg},
		{"every field", full("")},
		{"every field, escaped", full("<\"é\\\n\xff>&\u2028")},
		{"extra claims", extraClaims},
		{"extra headers", extraHeaders},
		{"no claims or headers", bare},
		{"empty expiry map", emptyExpiry},
		{"far year in claims", farYear},
		{"far year in expiry", farExpiry},
		{"cloned", NewSession("bob", "globex").Clone().(*Session)},
	}
}

func TestSessionAppendJSON(t *testing.T) {
	for _, tc := range sessionCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := json.Marshal(tc.s)
			got, err := tc.s.AppendJSON([]byte("prefix"))
			if err == nil {
				if string(got[:6]) != "prefix" {
					t.Fatalf("AppendJSON overwrote its dst: %s", got)
				}
				got = got[6:]
			}
			if (err != nil) != (wantErr != nil) || string(got) != string(want) {
				t.Fatalf("got  %s (%v)\nwant %s (%v)", got, err, want, wantErr)
			}
			if err != nil {
				return
			}
			back := &Session{DefaultSession: openid.DefaultSession{Claims: &jwt.IDTokenClaims{}, Headers: &jwt.Headers{}}}
			if err := json.Unmarshal(got, back); err != nil {
				t.Fatalf("decode: %v", err)
			}
		})
	}
}

// BenchmarkSessionJSON compares the token path's session encoding with
// encoding/json's.
func BenchmarkSessionJSON(b *testing.B) {
	s := NewSession("alice", "acme")
	s.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := json.Marshal(s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for i := 0; i < b.N; i++ {
			if _, err := s.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
