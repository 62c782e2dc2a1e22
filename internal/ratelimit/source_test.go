package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestSourceLimiterBurstThenRate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newSourceLimiter(SourceLimit{Burst: 3, Rate: 1.0 / 60}, clock.Now)
	for i := range 3 {
		if ok, _ := l.Take("a"); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.Take("a")
	if ok || wait <= 0 || wait > time.Minute {
		t.Fatalf("over the burst: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.Take("b"); !ok {
		t.Fatal("another source is limited too")
	}
	clock.Advance(wait)
	if ok, _ := l.Take("a"); !ok {
		t.Fatal("not admitted after the wait it was told")
	}
	if ok, _ := l.Take("a"); ok {
		t.Fatal("one token earned, two spent")
	}
}

// Memory is bounded: a flood of sources never holds more than MaxSources
// buckets, and the sources that spent the most are the ones remembered.
func TestSourceLimiterBoundedMemory(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newSourceLimiter(SourceLimit{Burst: 2, Rate: 1.0 / 3600, MaxSources: 100}, clock.Now)
	l.Take("heavy")
	l.Take("heavy")
	for i := range 10_000 {
		l.Take(fmt.Sprintf("s%d", i))
		if n := l.Len(); n > 100 {
			t.Fatalf("%d buckets held, bound 100", n)
		}
	}
	if ok, _ := l.Take("heavy"); ok {
		t.Fatal("the emptiest bucket was forgotten")
	}
}
