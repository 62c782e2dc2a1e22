// Package batch runs concurrent calls of one kind as one: while a call is
// in flight, the calls that arrive queue, and when it returns the first of
// them runs the whole queue at once. A call that finds none in flight
// yields to the scheduler once, then runs with whatever queued meanwhile
// (alone if nothing did). Each caller still waits for its own outcome;
// what the queue saves is the statements, round trips and commits the
// calls would have paid one by one (storage's token inserts and mint
// lookups, deputy-idp's Directory reads).
//
// A batch is all or nothing: when it fails, each of its calls is run again
// alone, so that every caller gets the outcome its call would have had by
// itself.
package batch

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
)

// Max caps the calls of one batch.
const Max = 32

// ErrAborted is what the other callers of a batch hear when its run never
// returned (it panicked); they then run their calls alone.
var ErrAborted = errors.New("batch: run aborted")

// Batcher groups concurrent calls carrying a T. One batch is in flight at a
// time. The zero value is ready to use.
type Batcher[T any] struct {
	mu    sync.Mutex
	busy  bool // a batch is in flight
	queue []*call[T]
}

type call[T any] struct {
	ctx  context.Context
	item T
	done chan outcome[T]
}

// outcome is what a waiting caller is told: its call's error, or that it
// must run its call alone, or that it leads the next batch.
type outcome[T any] struct {
	err   error
	alone bool
	lead  []*call[T]
}

// Do runs item through run, together with the items of concurrent callers
// when there are any. run is given the items of one batch and the context
// of the caller that leads it, and returns nil only if every item
// succeeded; whatever it writes into an item (a pointer) is visible to that
// item's caller once Do returns. A batch of one is run with the caller's
// own context.
func (b *Batcher[T]) Do(ctx context.Context, item T, run func(context.Context, []T) error) error {
	c := &call[T]{ctx: ctx, item: item}
	b.mu.Lock()
	if !b.busy {
		b.busy = true
		b.mu.Unlock()
		// Callers often arrive together: the requests one batch of an
		// earlier step (deputy-idp's Directory, a mint's lookup) has just
		// answered all become runnable at once. Yielding once lets them
		// queue behind this one, so they make one batch here rather than a
		// lone call and then the rest (docs/performance.md change 17). A
		// lone call pays one trip through the scheduler.
		runtime.Gosched()
		batch := b.take(c)
		if ctx.Err() != nil {
			// Ended while it yielded: the others' batch must not run
			// under it, as when a queued caller is handed the lead.
			b.passLead(c, batch)
			return ctx.Err()
		}
		return b.lead(c, batch, run)
	}
	c.done = make(chan outcome[T], 1)
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	var out outcome[T]
	select {
	case out = <-c.done:
	case <-ctx.Done():
		// Gone from the queue, the call is never run; already handed on,
		// it is part of a batch and must hear how that went.
		if b.dequeue(c) {
			return ctx.Err()
		}
		out = <-c.done
	}
	switch {
	case out.lead != nil && ctx.Err() != nil:
		// Gone before its turn to lead: the others' batch must not run
		// under a context that has ended, so the next of them leads it.
		b.passLead(c, out.lead)
		return ctx.Err()
	case out.lead != nil:
		return b.lead(c, out.lead, run)
	case out.alone:
		return run(ctx, []T{item})
	default:
		return out.err
	}
}

// lead runs batch (self among them), hands the queue that built up
// meanwhile to its first caller, and tells every other caller its outcome.
func (b *Batcher[T]) lead(self *call[T], batch []*call[T], run func(context.Context, []T) error) (err error) {
	items := make([]T, len(batch))
	for i, c := range batch {
		items[i] = c.item
	}
	defer func() {
		b.handOver()
		alone := err != nil && len(batch) > 1
		for _, c := range batch {
			if c != self {
				c.done <- outcome[T]{err: err, alone: alone}
			}
		}
		if alone {
			err = run(self.ctx, []T{self.item})
		}
	}()
	err = ErrAborted
	return run(self.ctx, items)
}

// passLead hands batch, without c, to its next caller; an empty batch
// hands the queue on instead.
func (b *Batcher[T]) passLead(c *call[T], batch []*call[T]) {
	rest := slices.DeleteFunc(batch, func(q *call[T]) bool { return q == c })
	if len(rest) == 0 {
		b.handOver()
		return
	}
	rest[0].done <- outcome[T]{lead: rest}
}

// dequeue removes c from the queue, reporting whether it was still there.
func (b *Batcher[T]) dequeue(c *call[T]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, q := range b.queue {
		if q == c {
			b.queue = slices.Delete(b.queue, i, i+1)
			return true
		}
	}
	return false
}

// take is c's batch: c and the calls queued behind it.
func (b *Batcher[T]) take(c *call[T]) []*call[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.popLocked(c, Max-1)
}

// popLocked removes up to n calls from the head of the queue and returns
// them after first (nil: none), with b.mu held.
func (b *Batcher[T]) popLocked(first *call[T], n int) []*call[T] {
	n = min(len(b.queue), n)
	batch := make([]*call[T], 0, n+1)
	if first != nil {
		batch = append(batch, first)
	}
	batch = append(batch, b.queue[:n]...)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// handOver starts the next batch from the queue, or frees the slot.
func (b *Batcher[T]) handOver() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.busy = false
		b.mu.Unlock()
		return
	}
	next := b.popLocked(nil, Max)
	b.mu.Unlock()
	next[0].done <- outcome[T]{lead: next}
}

// Hold makes the calls that arrive queue as if a batch were in flight, for
// tests that need a batch of a known size: queued reports how many wait,
// release hands them on as one batch (as a returning batch does).
func (b *Batcher[T]) Hold() (queued func() int, release func()) {
	b.mu.Lock()
	held := !b.busy
	b.busy = true
	b.mu.Unlock()
	queued = func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue)
	}
	release = func() {
		if held {
			b.handOver()
		}
	}
	return queued, release
}
