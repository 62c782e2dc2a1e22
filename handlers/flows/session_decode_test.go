package flows

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"
)

// decodeTargets are sessions to decode into, as a caller might hand them:
// json.Unmarshal fills what is there, so each must end as it would.
func decodeTargets() map[string]func() *Session {
	return map[string]func() *Session{
		"zero": func() *Session { return &Session{} },
		"new": func() *Session {
			s := NewSession("someone", "an-org")
			s.Claims.RequestedAt = time.Unix(2, 0) // not now: two targets must be equal
			return s
		},
		"allocated": func() *Session {
			return &Session{DefaultSession: openid.DefaultSession{Claims: &jwt.IDTokenClaims{Audience: []string{"x", "y", "z"}}, Headers: &jwt.Headers{}}}
		},
		"with an expiry": func() *Session {
			s := NewSession("", "")
			s.Claims.RequestedAt = time.Unix(2, 0)
			s.SetExpiresAt(fosite.RefreshToken, time.Unix(1, 0))
			return s
		},
	}
}

// TestSessionDecodeJSON: DecodeJSON leaves every kind of target exactly as
// json.Unmarshal does, for every session the encoding tests write, and
// reads by hand (not through encoding/json) what AppendJSON writes with
// plain ASCII strings.
func TestSessionDecodeJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range sessionCases(t) {
		data, err := tc.s.AppendJSON(nil)
		if err != nil {
			if data, err = json.Marshal(tc.s); err != nil {
				continue // encoding/json refuses it too; nothing is stored
			}
		}
		plain := !strings.ContainsAny(string(data), "\\") && !strings.Contains(string(data), `"ext":{`) &&
			!strings.Contains(string(data), `"extra":{`)
		var d decodedSession
		if got := d.read(string(data)); got != plain {
			t.Errorf("%s: read by hand %v, want %v: %s", tc.name, got, plain, data)
		}
		for name, target := range decodeTargets() {
			got, want := target(), target()
			gotErr, wantErr := got.DecodeJSON(string(data)), json.Unmarshal(data, want)
			if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
				t.Errorf("%s into %s: DecodeJSON %v\n%#v\njson.Unmarshal %v\n%#v", tc.name, name, gotErr, got, wantErr, want)
			}
		}
	}
}

// FuzzSessionDecodeJSON: for any text, DecodeJSON fails when json.Unmarshal
// does and otherwise leaves the session as it does.
func FuzzSessionDecodeJSON(f *testing.F) {
	for _, tc := range sessionCases(&testing.T{}) {
		if data, err := tc.s.AppendJSON(nil); err == nil {
			f.Add(string(data))
		}
	}
	f.Add(`{"id_token_claims":null,"headers":null,"expires_at":{},"username":"","subject":""}`)
	f.Fuzz(func(t *testing.T, data string) {
		for name, target := range decodeTargets() {
			got, want := target(), target()
			gotErr, wantErr := got.DecodeJSON(data), json.Unmarshal([]byte(data), want)
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("into %s: DecodeJSON %v, json.Unmarshal %v", name, gotErr, wantErr)
			}
			if gotErr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("into %s:\n%#v\n%#v", name, got, want)
			}
		}
	})
}

// BenchmarkSessionDecodeJSON compares the store's session decoding with
// encoding/json's.
func BenchmarkSessionDecodeJSON(b *testing.B) {
	s := NewSession("alice", "acme")
	s.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	data, err := s.AppendJSON(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := json.Unmarshal(data, &Session{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeJSON", func(b *testing.B) {
		b.ReportAllocs()
		text := string(data)
		for b.Loop() {
			if err := (&Session{}).DecodeJSON(text); err != nil {
				b.Fatal(err)
			}
		}
	})
}
