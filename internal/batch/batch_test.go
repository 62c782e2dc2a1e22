package batch_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/batch"
)

// item is one call's input and what its run recorded.
type item struct {
	name  string
	alone bool // run in a batch of one
	done  bool // run in a batch that succeeded
}

// recorder is a run function that records batch sizes and fails, or
// panics, as told.
type recorder struct {
	mu    sync.Mutex
	sizes []int
	// fail fails a batch of more than one; bad fails the named item alone;
	// panics panics in a batch of more than one.
	fail, panics bool
	bad          string
}

func (r *recorder) run(_ context.Context, items []*item) error {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(items))
	r.mu.Unlock()
	if len(items) > 1 && r.panics {
		panic("run panicked")
	}
	if len(items) > 1 && r.fail {
		return errors.New("batch failed")
	}
	for _, it := range items {
		if it.name == r.bad {
			return fmt.Errorf("%s is bad", it.name)
		}
	}
	for _, it := range items {
		it.done, it.alone = true, len(items) == 1
	}
	return nil
}

// queue starts n calls while b is held, waits until they all queue, and
// returns their items, their errors (once wait returns) and release.
func queue(t *testing.T, b *batch.Batcher[*item], r *recorder, n int, ctx func(i int) context.Context) (items []*item, errs []error, release func(), wait func()) {
	t.Helper()
	queued, release := b.Hold()
	items, errs = make([]*item, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		items[i] = &item{name: fmt.Sprint("item-", i)}
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("panicked: %v", p)
				}
			}()
			errs[i] = b.Do(ctx(i), items[i], r.run)
		})
	}
	for deadline := time.Now().Add(10 * time.Second); queued() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls queued", queued(), n)
		}
	}
	return items, errs, release, wg.Wait
}

func background(int) context.Context { return context.Background() }

func TestBatcher(t *testing.T) {
	t.Parallel()

	t.Run("a lone call runs alone", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{}
		it := &item{name: "x"}
		if err := b.Do(context.Background(), it, r.run); err != nil || !it.done || !it.alone {
			t.Fatalf("%v, %+v", err, it)
		}
	})

	t.Run("a queue longer than Max is run in batches of at most Max", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{}
		n := batch.Max + 8
		items, errs, release, wait := queue(t, &b, r, n, background)
		release()
		wait()
		for i, it := range items {
			if errs[i] != nil || !it.done {
				t.Errorf("%s: %v, done %v", it.name, errs[i], it.done)
			}
		}
		if !slices.Equal(r.sizes, []int{batch.Max, 8}) {
			t.Errorf("batches of %v, want [%d 8]", r.sizes, batch.Max)
		}
	})

	t.Run("a failed batch is run again call by call, the leader's too", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{fail: true, bad: "item-2"}
		items, errs, release, wait := queue(t, &b, r, 5, background)
		release()
		wait()
		for i, it := range items {
			if it.name == "item-2" {
				if errs[i] == nil || it.done {
					t.Errorf("%s: %v, done %v; want its own failure", it.name, errs[i], it.done)
				}
				continue
			}
			if errs[i] != nil || !it.done || !it.alone {
				t.Errorf("%s: %v, %+v; want done alone", it.name, errs[i], it)
			}
		}
		if !slices.Equal(r.sizes, []int{5, 1, 1, 1, 1, 1}) {
			t.Errorf("batches of %v, want one of 5 then 5 alone", r.sizes)
		}
	})

	t.Run("a panicking batch: the others run alone, none is told it succeeded", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{panics: true}
		items, errs, release, wait := queue(t, &b, r, 4, background)
		release()
		wait()
		panicked := 0
		for i, it := range items {
			switch {
			case errs[i] != nil:
				panicked++ // the leader: its panic goes on up
			case !it.done || !it.alone:
				t.Errorf("%s: told it succeeded, %+v", it.name, it)
			}
		}
		if panicked != 1 {
			t.Errorf("%d callers saw the panic, want the leader only", panicked)
		}
		// And the batcher is free again.
		it := &item{name: "after"}
		if err := b.Do(context.Background(), it, (&recorder{}).run); err != nil || !it.done {
			t.Errorf("after the panic: %v, %+v", err, it)
		}
	})

	t.Run("a queued call whose context ends leaves the queue and is never run", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{}
		items, errs, release, wait := queue(t, &b, r, 3, background)
		ctx, cancel := context.WithCancel(context.Background())
		gone := &item{name: "gone"}
		returned := make(chan error, 1)
		go func() { returned <- b.Do(ctx, gone, r.run) }()
		cancel()
		// It returns while the batch ahead is still in flight.
		select {
		case err := <-returned:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled call: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the cancelled call did not return")
		}
		release()
		wait()
		if gone.done {
			t.Error("the cancelled call was run")
		}
		for i, it := range items {
			if errs[i] != nil || !it.done {
				t.Errorf("%s: %v, %+v", it.name, errs[i], it)
			}
		}
		if !slices.Equal(r.sizes, []int{3}) {
			t.Errorf("batches of %v, want [3]", r.sizes)
		}
	})

	t.Run("a caller whose context ended when handed the lead passes it on", func(t *testing.T) {
		var b batch.Batcher[*item]
		r := &recorder{}
		queued, release := b.Hold()
		gone := &item{name: "gone"}
		returned := make(chan error, 1)
		// Its Done never fires, so it is still queued when the lead comes.
		go func() { returned <- b.Do(endedContext{}, gone, r.run) }()
		for deadline := time.Now().Add(10 * time.Second); queued() < 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the call did not queue")
			}
		}
		items := []*item{{name: "a"}, {name: "b"}}
		errs := make([]error, len(items))
		var wg sync.WaitGroup
		for i, it := range items {
			wg.Go(func() { errs[i] = b.Do(context.Background(), it, r.run) })
		}
		for deadline := time.Now().Add(10 * time.Second); queued() < 3; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("calls did not queue")
			}
		}
		release()
		wg.Wait()
		if err := <-returned; !errors.Is(err, context.Canceled) || gone.done {
			t.Errorf("the ended call: %v, run %v", err, gone.done)
		}
		for i, it := range items {
			if errs[i] != nil || !it.done {
				t.Errorf("%s: %v, %+v", it.name, errs[i], it)
			}
		}
		if !slices.Equal(r.sizes, []int{2}) {
			t.Errorf("batches of %v, want [2]", r.sizes)
		}
	})
}

// endedContext has ended (Err) but never says so on Done, so that a call
// made with it stays queued until it is handed the lead.
type endedContext struct{ context.Context }

func (endedContext) Done() <-chan struct{}       { return nil }
func (endedContext) Err() error                  { return context.Canceled }
func (endedContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (endedContext) Value(any) any               { return nil }

// TestCallsReleasedTogetherShareABatch: callers that become runnable at the
// same moment (the requests one batch of an earlier step has just
// answered) share a batch rather than each running alone: the first of
// them yields once before it takes its batch, so the others queue behind
// it. On one P, without the yield, each call runs alone (n batches of
// one); with it, one batch, or two when the scheduler's fairness check of
// its global queue brings the yielding caller back before all the others
// have queued.
func TestCallsReleasedTogetherShareABatch(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 8
	var b batch.Batcher[*item]
	r := &recorder{}
	start := make(chan struct{})
	var ready, wg sync.WaitGroup
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			ready.Done()
			<-start
			if err := b.Do(context.Background(), &item{name: fmt.Sprint(i)}, r.run); err != nil {
				t.Error(err)
			}
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	total := 0
	for _, size := range r.sizes {
		total += size
	}
	if len(r.sizes) > 2 || total != n {
		t.Errorf("batches %v, want all %d calls in one or two", r.sizes, n)
	}
}

// TestCallWhoseContextEndedRunsNothing: a caller that finds no batch in
// flight but whose context has ended by the time it would lead (here:
// before it called) runs nothing, neither its own call nor others', and
// hears its context's error.
func TestCallWhoseContextEndedRunsNothing(t *testing.T) {
	t.Parallel()
	var b batch.Batcher[*item]
	r := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, &item{name: "gone"}, r.run); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do: %v, want context.Canceled", err)
	}
	if len(r.sizes) != 0 {
		t.Errorf("batches %v, want none run", r.sizes)
	}
	// The slot is free again: the next call runs.
	if err := b.Do(context.Background(), &item{name: "next"}, r.run); err != nil || !slices.Equal(r.sizes, []int{1}) {
		t.Errorf("next call: %v, batches %v; want it run alone", err, r.sizes)
	}
}
