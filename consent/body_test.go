package consent_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// cutShort is a request body that yields part of a document and then the
// error net/http's server returns for a body that ends before its
// Content-Length.
type cutShort struct{ r io.Reader }

func (c *cutShort) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// TestCutShortBodyIsTheClients: a body that ends early is the client's
// fault (400), never ours (500) nor the database's (503 and "database
// unavailable" at ERROR, as it was), and writes nothing.
func TestCutShortBodyIsTheClients(t *testing.T) {
	t.Parallel()
	full := approveJSON("s", "approve", "docs:read")
	form := "organization=acme&sessionId=s&scopes=docs:read&decision=approve"
	cases := []struct{ name, ctype, body string }{
		{"json mid-value", "application/json", full[:len(full)-8]},
		{"json complete but short of its length", "application/json", full},
		{"json nothing", "application/json", ""},
		{"form", "application/x-www-form-urlencoded", form[:len(form)-4]},
	}
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		logs := &testkit.Buffer{}
		e := newEnv(t, s, func(c *consent.Config) {
			c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := snapshot(t, s)
				r := httptest.NewRequest(http.MethodPost, "https://"+testHost+"/agent/approve", &cutShort{strings.NewReader(tc.body)})
				r.ContentLength = int64(len(tc.body) + 64)
				r.Header.Set("Content-Type", tc.ctype)
				r.Header.Set("Sec-Fetch-Site", "same-origin")
				r.Header.Set("Origin", "https://"+testHost)
				r.AddCookie(&http.Cookie{Name: cookieName, Value: "alice"})
				w := httptest.NewRecorder()
				e.h.ServeHTTP(w, r)
				wantStatus(t, w, http.StatusBadRequest)
				if ra := w.Header().Get("Retry-After"); ra != "" {
					t.Errorf("Retry-After %q on a client's broken body", ra)
				}
				if tc.ctype == "application/json" {
					var ae struct{ Error, Message string }
					if err := json.Unmarshal(w.Body.Bytes(), &ae); err != nil || ae.Error != "invalid_request" {
						t.Errorf("body %s: want invalid_request", w.Body.String())
					}
				}
				if after := snapshot(t, s); after != before {
					t.Fatalf("rows changed:\n%s\n→\n%s", before, after)
				}
			})
		}
		if l := logs.String(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "unavailable") {
			t.Errorf("a client's broken body logged as an outage:\n%s", l)
		}
	})
}
