package ratelimit

import (
	"fmt"
	"testing"
)

// TestEvict: full buckets are forgotten; when the map is still at its
// bound, the fullest eighth of the droppable rest goes; a bucket in use,
// and the most drained ones, stay; nothing droppable is no panic.
func TestEvict(t *testing.T) {
	t.Parallel()
	type b struct {
		tokens float64
		inUse  bool
	}
	level := func(x *b) (float64, bool) { return x.tokens, !x.inUse }
	for _, tc := range []struct {
		name      string
		m         map[string]*b
		max       int
		wantGone  []string
		wantStays []string
	}{
		{"full ones forgotten", map[string]*b{"full": {tokens: 10}, "drained": {tokens: 0}}, 100, []string{"full"}, []string{"drained"}},
		{"nothing droppable", map[string]*b{"a": {tokens: 1, inUse: true}, "b": {tokens: 2, inUse: true}}, 1, nil, []string{"a", "b"}},
		{"fullest eighth at the bound", func() map[string]*b {
			m := map[string]*b{"busy": {tokens: 9.5, inUse: true}}
			for i := range 16 {
				m[fmt.Sprint(i)] = &b{tokens: float64(i) / 2}
			}
			return m
		}(), 17, []string{"15", "14"}, []string{"busy", "0", "1", "13"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			Evict(tc.m, 10, tc.max, level)
			for _, k := range tc.wantGone {
				if _, ok := tc.m[k]; ok {
					t.Errorf("%s kept", k)
				}
			}
			for _, k := range tc.wantStays {
				if _, ok := tc.m[k]; !ok {
					t.Errorf("%s evicted", k)
				}
			}
		})
	}
}
