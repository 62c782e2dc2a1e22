package scope

import (
	"reflect"
	"testing"
)

func TestCatalogDefaultRule(t *testing.T) {
	t.Parallel()
	c := NewCatalog(Entry{Name: "deploy", Description: "Deploy", Write: false}, Entry{Name: "billing:read", Write: true})
	var zero *Catalog
	for _, tc := range []struct {
		c     *Catalog
		name  string
		write bool
	}{
		{c, "deploy", false},           // catalog wins over the suffix rule
		{c, "billing:read", true},      // even against ":read"
		{c, "projects:read", false},    // not in catalog: ends in :read
		{c, "projects:write", true},    // not in catalog: anything else writes
		{zero, "projects:read", false}, // nil catalog is usable
		{zero, "projects:readx", true}, // suffix must be exact
		{zero, "", true},
	} {
		if got := tc.c.IsWrite(tc.name); got != tc.write {
			t.Errorf("IsWrite(%q) = %v, want %v", tc.name, got, tc.write)
		}
	}
}

func TestSetArithmetic(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		got  []string
		want []string
	}{
		{"parse", Parse("  b a  b "), []string{"a", "b"}},
		{"intersect", Intersect([]string{"a", "b", "c"}, []string{"c", "b"}, []string{"b", "x"}), []string{"b"}},
		{"intersect none", Intersect([]string{"a"}, nil), []string{}},
		{"union", Union([]string{"b"}, []string{"a", "b"}), []string{"a", "b"}},
		{"missing", Missing([]string{"a", "b"}, []string{"b"}), []string{"a"}},
	} {
		if len(tc.got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v want %v", tc.name, tc.got, tc.want)
		}
	}
}
