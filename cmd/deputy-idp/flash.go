package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
)

// A new app secret is shown exactly once, and on a page the browser reached
// with GET: the form that creates it redirects (post/redirect/get), and the
// secret travels to that one page in a short-lived cookie sealed with a key
// derived from the system secret. Reading the page clears the cookie, so a
// reload shows the secret gone; every replica can open it; and it is bound
// to the user and the app, so it opens nowhere else.

const (
	secretFlashCookie = "deputy_new_secret"
	secretFlashTTL    = 5 * time.Minute
)

type flashSealer struct {
	aead cipher.AEAD
}

func newFlashSealer(systemSecret []byte) *flashSealer {
	key, err := hkdf.Key(sha256.New, systemSecret, nil, "deputy-idp new-secret flash v1", 32)
	if err != nil {
		panic("hkdf: " + err.Error())
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("aes: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("gcm: " + err.Error())
	}
	return &flashSealer{aead: aead}
}

var errFlash = errors.New("no readable flash")

// seal binds value to (userID, appID) and an expiry.
func (f *flashSealer) seal(userID, appID, value string, now time.Time) string {
	nonce := make([]byte, f.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	exp := now.Add(secretFlashTTL).UTC().Format(time.RFC3339)
	out := f.aead.Seal(nonce, nonce, []byte(exp+"\n"+value), []byte(userID+"\n"+appID))
	return base64.RawURLEncoding.EncodeToString(out)
}

func (f *flashSealer) open(userID, appID, sealed string, now time.Time) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < f.aead.NonceSize() {
		return "", errFlash
	}
	plain, err := f.aead.Open(nil, b[:f.aead.NonceSize()], b[f.aead.NonceSize():], []byte(userID+"\n"+appID))
	if err != nil {
		return "", errFlash
	}
	exp, value, ok := strings.Cut(string(plain), "\n")
	if !ok {
		return "", errFlash
	}
	t, err := time.Parse(time.RFC3339, exp)
	if err != nil || now.After(t) {
		return "", errFlash
	}
	return value, nil
}

// setSecretFlash hands value to the app page at path.
func (s *server) setSecretFlash(w http.ResponseWriter, userID, appID, path, value string) {
	http.SetCookie(w, &http.Cookie{
		Name:     secretFlashCookie,
		Value:    s.flash.seal(userID, appID, value, time.Now()),
		Path:     path,
		MaxAge:   int(secretFlashTTL / time.Second),
		HttpOnly: true,
		Secure:   s.sessions.secure,
		SameSite: http.SameSiteStrictMode,
	})
}

// takeSecretFlash returns the flashed value for (userID, appID) at path, if
// any, and clears it.
func (s *server) takeSecretFlash(w http.ResponseWriter, r *http.Request, userID, appID, path string) string {
	c, err := r.Cookie(secretFlashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: secretFlashCookie, Value: "", Path: path, MaxAge: -1,
		HttpOnly: true, Secure: s.sessions.secure, SameSite: http.SameSiteStrictMode})
	v, err := s.flash.open(userID, appID, c.Value, time.Now())
	if err != nil {
		return ""
	}
	return v
}
