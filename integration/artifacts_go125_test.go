//go:build !go1.26

package integration

import "testing"

// artifactDir is where a test keeps what it produced. Before Go 1.26 testing
// has no artifact directory: a temporary one, gone after the test (set
// DEPUTY_SCREENSHOT_DIR to keep screenshots).
func artifactDir(t *testing.T) string { return t.TempDir() }
