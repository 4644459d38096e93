package nomadbridge

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	nomad "github.com/hashicorp/nomad/api"
)

// Handler is told what the Watcher reads. Its methods are called from the
// watcher's goroutine, one at a time, so a slow handler slows the stream and
// never reorders it.
type Handler interface {
	// Resync is called after every (re)connect, once the Store is filled:
	// anything may have happened while nobody was listening.
	Resync(ctx context.Context)
	// JobChanged is called for every event about a runner job (by its ID
	// form), after the Store recorded it. deregistered is true for a Job event
	// saying the job was stopped or purged.
	JobChanged(ctx context.Context, jobID string, deregistered bool)
}

// StreamMetrics is told how the event stream fares.
type StreamMetrics interface {
	// Connected is called with true when a stream opens and false when it ends.
	Connected(up bool)
	// Reconnected is called on every stream that opens after the first.
	Reconnected()
	// BatchRead is called with the index of every event batch read
	// (heartbeats aside).
	BatchRead(index uint64)
	// AllocationRead is called with the modify time (Unix nanoseconds, as
	// Nomad reports it) of every allocation an event carries.
	AllocationRead(modifyTime int64)
}

// Watcher reads Nomad's event stream (topics Job and Allocation) and keeps the
// Store and a Handler current from it. Each new connection resumes after the
// last event read (see nextStreamStart); since events may still have been
// missed, every (re)connect refills the Store with one jobs list and one
// allocations list and asks the Handler to resync. Nothing is polled.
type Watcher struct {
	Client Client
	// Store, when set, is filled at every (re)connect and kept current from
	// the events; while the stream is down it is unsynced, so its lookups miss.
	Store *JobStore
	// Metrics, when set, is told how the stream fares.
	Metrics StreamMetrics
	// MaxBackoff caps the wait between reconnects (default 30s, plus up to
	// half of it as jitter).
	MaxBackoff time.Duration

	connected atomic.Bool
}

// Connected tells whether the stream is open right now.
func (w *Watcher) Connected() bool { return w.connected.Load() }

func (w *Watcher) setConnected(up bool) {
	w.connected.Store(up)
	if w.Metrics != nil {
		w.Metrics.Connected(up)
	}
}

// minReconnectBackoff is the first wait before reconnecting the event stream.
const minReconnectBackoff = 500 * time.Millisecond

// Run reads the stream into h until ctx ends, reconnecting whenever the
// stream breaks; it returns nil then. It logs through the logger in ctx.
func (w *Watcher) Run(ctx context.Context, h Handler) error {
	logger := logr.FromContextOrDiscard(ctx)
	maxBackoff := 30 * time.Second
	if w.MaxBackoff > 0 {
		maxBackoff = max(w.MaxBackoff, minReconnectBackoff)
	}
	var next streamStart
	defer w.setConnected(false)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		end, err := w.session(ctx, h, next.index, attempt > 0)
		if ctx.Err() != nil {
			return nil
		}
		next = nextStreamStart(next, end, maxBackoff)
		wait := next.backoff + rand.N(next.backoff/2)
		logger.Info("Nomad event stream interrupted; reconnecting", "error", err, "index", next.index, "connectedFor", end.connectedFor, "backoff", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

// streamStart is where and when the watcher opens its next stream.
type streamStart struct {
	// index is the first event index the stream asks for (0: from now).
	index uint64
	// backoff is the wait before opening it, before jitter.
	backoff time.Duration
}

// streamEnd is what one attempt to read the stream came to.
type streamEnd struct {
	// read: at least one event batch was read (heartbeats aside).
	read bool
	// lastIndex is the index of the last batch read.
	lastIndex uint64
	// connectedFor is how long the stream stayed open (0: it did not open).
	connectedFor time.Duration
}

// nextStreamStart decides, once a stream has ended or failed to open, where
// the next one resumes and how long to wait first.
//
// It resumes right after the last batch read, also when that index is lower
// than the one the stream was opened at: indexes only grow within one Nomad,
// so one that went back means a new Nomad (state lost), whose indexes are the
// ones to follow. A stream that read nothing resumes where it was opened.
//
// Failures in a row double the wait, from minReconnectBackoff up to
// maxBackoff. A stream that opens but breaks at once counts as a failure:
// every connection lists all jobs and allocations and resyncs every runner, so
// a Nomad (or proxy) that accepts streams and drops them must not be
// reconnected to twice a second. Only a stream that stayed up for maxBackoff
// starts the count again.
func nextStreamStart(last streamStart, end streamEnd, maxBackoff time.Duration) streamStart {
	next := last
	if end.read {
		next.index = end.lastIndex + 1
	}
	if last.backoff == 0 || end.connectedFor >= maxBackoff {
		next.backoff = minReconnectBackoff
	} else {
		next.backoff = min(2*last.backoff, maxBackoff)
	}
	return next
}

// session opens one stream at index, fills the Store, resyncs h and reads
// the stream until it ends.
func (w *Watcher) session(ctx context.Context, h Handler, index uint64, reconnect bool) (streamEnd, error) {
	ch, err := w.Client.Events(ctx, index)
	if err != nil {
		return streamEnd{}, err
	}
	logr.FromContextOrDiscard(ctx).Info("Connected to the Nomad event stream", "index", index)
	if reconnect && w.Metrics != nil {
		w.Metrics.Reconnected()
	}
	// Wall time, not the operator's clock: how long a connection really
	// lasted decides the reconnect backoff, whatever a test's clock says.
	openedAt := time.Now()
	w.setConnected(true)
	w.fill(ctx)
	h.Resync(ctx)
	end, err := w.consume(ctx, h, ch)
	w.setConnected(false)
	end.connectedFor = time.Since(openedAt)
	if w.Store != nil {
		// Events may be missed from now on: lookups ask Nomad until the next fill.
		w.Store.Unsync()
	}
	return end, err
}

// consume reads events into the Store and h until the stream ends.
func (w *Watcher) consume(ctx context.Context, h Handler, ch <-chan *nomad.Events) (streamEnd, error) {
	var end streamEnd
	for {
		var batch *nomad.Events
		var ok bool
		select {
		case <-ctx.Done():
			return end, ctx.Err()
		case batch, ok = <-ch:
		}
		if !ok {
			return end, nil
		}
		if batch.Err != nil {
			return end, batch.Err
		}
		if batch.IsHeartbeat() {
			continue
		}
		if w.Metrics != nil {
			w.Metrics.BatchRead(batch.Index)
		}
		for i := range batch.Events {
			w.observe(ctx, h, &batch.Events[i])
		}
		end.read, end.lastIndex = true, batch.Index
	}
}

// observe records what an event says about a runner job in the Store, then
// tells h (so the handler's reaction already sees it).
func (w *Watcher) observe(ctx context.Context, h Handler, e *nomad.Event) {
	var jobID string
	var alloc *nomad.Allocation
	switch e.Topic {
	case nomad.TopicJob:
		jobID = e.Key
	case nomad.TopicAllocation:
		a, err := e.Allocation()
		if err != nil || a == nil {
			return
		}
		if w.Metrics != nil {
			w.Metrics.AllocationRead(a.ModifyTime)
		}
		jobID, alloc = a.JobID, a
	default:
		return
	}
	if _, _, ok := ParseRunnerJobID(jobID); !ok {
		return // not a runner job name: certainly not ours
	}
	deregistered := isDeregistration(e)
	if w.Store != nil {
		if alloc != nil {
			w.Store.ObserveAllocation(allocationStub(alloc))
		} else {
			w.Store.ObserveJob(jobID, deregistered)
		}
	}
	h.JobChanged(ctx, jobID, deregistered)
}

// fill lists every runner job and allocation (two Nomad calls in all, whatever
// the number of runners) into the Store. On failure the store stays unsynced
// and lookups miss, so callers read Nomad directly, as without a store.
func (w *Watcher) fill(ctx context.Context) {
	if w.Store == nil {
		return
	}
	logger := logr.FromContextOrDiscard(ctx)
	jobs, err := w.Client.ListRunnerJobs(ctx)
	if err != nil {
		logger.Error(err, "Listing runner jobs for the job store failed; reading Nomad per runner until the next reconnect")
		return
	}
	allocs, err := w.Client.ListRunnerAllocations(ctx)
	if err != nil {
		logger.Error(err, "Listing allocations for the job store failed; reading Nomad per runner until the next reconnect")
		return
	}
	w.Store.Replace(jobs, allocs)
	logger.Info("Filled the Nomad job store", "jobs", len(jobs), "allocations", len(allocs))
}

// isDeregistration tells a Job event that says the job was stopped or purged.
func isDeregistration(e *nomad.Event) bool {
	return e.Topic == nomad.TopicJob && strings.Contains(e.Type, "Deregistered")
}
