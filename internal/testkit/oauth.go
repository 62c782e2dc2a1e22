package testkit

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"
)

// Twice is v with key sent twice: second after v's own value, or twice
// when v has none (the repeated parameters RFC 6749 §3.1 forbids).
func Twice(v url.Values, key, second string) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	if len(out[key]) == 0 {
		out[key] = []string{second}
	}
	out[key] = append(out[key], second)
	return out
}

// RaceTokenRequests posts form to tokenURL n times at once (built first,
// then released together) with HTTP Basic client credentials, and returns
// the tokens of the answers that succeeded. Every other answer must be a
// 400 with the error code loser; anything else (a 5xx above all) fails t.
func RaceTokenRequests(t testing.TB, c *http.Client, tokenURL, clientID, secret string, form url.Values, n int, loser string) []*oauth2.Token {
	t.Helper()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := c.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			answers[i].status = resp.StatusCode
			answers[i].body, answers[i].err = io.ReadAll(resp.Body)
		}()
	}
	close(start)
	wg.Wait()
	var wins []*oauth2.Token
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("request %d: %v", i, a.err)
		}
		var out struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			Error        string `json:"error"`
		}
		_ = json.Unmarshal(a.body, &out)
		switch {
		case a.status == http.StatusOK && out.AccessToken != "":
			wins = append(wins, &oauth2.Token{AccessToken: out.AccessToken, RefreshToken: out.RefreshToken})
		case a.status != http.StatusBadRequest || out.Error != loser:
			body := string(a.body)
			if len(body) > 300 {
				body = body[:300] + "…"
			}
			t.Errorf("request %d: status %d, want 200 or 400 %s\n%s", i, a.status, loser, body)
		}
	}
	return wins
}
