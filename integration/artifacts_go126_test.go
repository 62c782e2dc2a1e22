//go:build go1.26

package integration

import "testing"

// artifactDir is where a test keeps what it produced: testing's artifact
// directory (go test -artifacts keeps it).
func artifactDir(t *testing.T) string { return t.ArtifactDir() }
