package controllers

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// NomadEventSource reads Nomad's event stream (topics Job and Allocation) and
// turns every event about one of our jobs into a reconcile of its Runner, through
// a channel the Runner controller watches. After every (re)connect it resyncs all
// runners, since anything may have happened while it was not listening. It runs
// on the leader only. No runner is ever polled.
type NomadEventSource struct {
	Bridge nomadbridge.Client
	// Reader is the manager's cache (runners are found by the job-ID index).
	Reader client.Reader
	// Out is the channel the Runner controller watches.
	Out chan<- event.GenericEvent
	// MaxBackoff caps the wait between reconnects (default 30s, plus up to
	// half of it as jitter).
	MaxBackoff time.Duration
	// Store, when set, is filled at every (re)connect with one jobs list and one
	// allocations list and kept current from the events, so that the Runner
	// controller answers from it instead of reading Nomad per runner.
	Store *JobStore

	connected atomic.Bool
}

// Connected tells whether the stream is open right now (readiness).
func (s *NomadEventSource) Connected() bool { return s.connected.Load() }

func (s *NomadEventSource) setConnected(up bool) {
	s.connected.Store(up)
	if up {
		metrics.EventStreamConnected.Set(1)
	} else {
		metrics.EventStreamConnected.Set(0)
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *NomadEventSource) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable; it returns when ctx ends.
func (s *NomadEventSource) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("nomad-events")
	maxBackoff := 30 * time.Second
	if s.MaxBackoff > 0 {
		maxBackoff = max(s.MaxBackoff, minReconnectBackoff)
	}
	var index uint64
	var backoff time.Duration
	defer s.setConnected(false)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ch, err := s.Bridge.Events(ctx, index)
		var connectedFor time.Duration
		if err == nil {
			logger.Info("Connected to the Nomad event stream", "index", index)
			if attempt > 0 {
				metrics.EventStreamReconnects.Inc()
			}
			connectedAt := time.Now()
			s.setConnected(true)
			s.fill(ctx)
			s.resync(ctx)
			var streamErr error
			index, streamErr = s.consume(ctx, ch, index)
			s.setConnected(false)
			connectedFor = time.Since(connectedAt)
			if s.Store != nil {
				// Events may be missed from now on: lookups ask Nomad until the next fill.
				s.Store.Unsync()
			}
			if ctx.Err() != nil {
				return nil
			}
			err = streamErr
		}
		backoff = nextReconnectBackoff(backoff, connectedFor, maxBackoff)
		wait := backoff + rand.N(backoff/2)
		logger.Info("Nomad event stream interrupted; reconnecting", "error", err, "index", index, "connectedFor", connectedFor, "backoff", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

// minReconnectBackoff is the first wait before reconnecting the event stream.
const minReconnectBackoff = 500 * time.Millisecond

// nextReconnectBackoff returns the wait (before jitter) ahead of the next
// connection attempt, given the last one and how long the stream it opened
// stayed up (0: it did not open). Failures in a row double it up to
// maxBackoff. A stream that opens but breaks at once counts as a failure:
// every connection lists all jobs and allocations and resyncs every runner, so
// a Nomad (or proxy) that accepts streams and drops them must not be
// reconnected to twice a second. Only a stream that stayed up for maxBackoff
// starts the count again.
func nextReconnectBackoff(last, connectedFor, maxBackoff time.Duration) time.Duration {
	if last == 0 || connectedFor >= maxBackoff {
		return minReconnectBackoff
	}
	return min(2*last, maxBackoff)
}

// consume forwards events until the stream ends; it returns the index to resume from.
func (s *NomadEventSource) consume(ctx context.Context, ch <-chan *nomad.Events, index uint64) (uint64, error) {
	for {
		var batch *nomad.Events
		var ok bool
		select {
		case <-ctx.Done():
			return index, ctx.Err()
		case batch, ok = <-ch:
		}
		if !ok {
			return index, nil
		}
		if batch.Err != nil {
			return index, batch.Err
		}
		if batch.IsHeartbeat() {
			continue
		}
		metrics.EventStreamIndex.Set(float64(batch.Index))
		for i := range batch.Events {
			if jobID := s.observe(&batch.Events[i]); jobID != "" {
				s.enqueueJob(ctx, jobID, isDeregistration(&batch.Events[i]))
			}
		}
		// Indexes only grow within one stream; one that went back means a new
		// Nomad (state lost): resume from its indexes, not from the old ones.
		index = batch.Index + 1
	}
}

// observe returns the job an event is about and, with a Store, records what
// the event says about it (before its runner is enqueued, so the reconcile sees it).
func (s *NomadEventSource) observe(e *nomad.Event) string {
	switch e.Topic {
	case nomad.TopicJob:
		if s.Store != nil {
			if _, _, ok := nomadbridge.ParseRunnerJobID(e.Key); ok {
				s.Store.ObserveJob(e.Key, isDeregistration(e))
			}
		}
		return e.Key
	case nomad.TopicAllocation:
		alloc, err := e.Allocation()
		if err != nil || alloc == nil {
			return ""
		}
		metrics.ObserveEventLag(alloc.ModifyTime)
		if s.Store != nil {
			if _, _, ok := nomadbridge.ParseRunnerJobID(alloc.JobID); ok {
				s.Store.ObserveAllocation(allocationStub(alloc))
			}
		}
		return alloc.JobID
	}
	return ""
}

// fill lists every runner job and allocation (two Nomad calls in all, whatever
// the number of runners) into the Store. On failure the store stays unsynced
// and reconciles read Nomad directly, as without a store.
func (s *NomadEventSource) fill(ctx context.Context) {
	if s.Store == nil {
		return
	}
	logger := log.FromContext(ctx).WithName("nomad-events")
	jobs, err := s.Bridge.ListRunnerJobs(ctx)
	if err != nil {
		logger.Error(err, "Listing runner jobs for the job store failed; reading Nomad per runner until the next reconnect")
		return
	}
	allocs, err := s.Bridge.ListRunnerAllocations(ctx)
	if err != nil {
		logger.Error(err, "Listing allocations for the job store failed; reading Nomad per runner until the next reconnect")
		return
	}
	s.Store.Replace(jobs, allocs)
	logger.Info("Filled the Nomad job store", "jobs", len(jobs), "allocations", len(allocs))
}

// isDeregistration tells a Job event that says the job was stopped or purged.
func isDeregistration(e *nomad.Event) bool {
	return e.Topic == nomad.TopicJob && strings.Contains(e.Type, "Deregistered")
}

// enqueueJob sends the runners of a job. A deregistration is not sent to a
// runner being deleted: it is the runner's own purge coming back, and another
// reconcile would only purge again.
func (s *NomadEventSource) enqueueJob(ctx context.Context, jobID string, deregistered bool) {
	if _, _, ok := nomadbridge.ParseRunnerJobID(jobID); !ok {
		return // not a runner job name: certainly not ours
	}
	list := &v1alpha1.RunnerList{}
	if err := s.Reader.List(ctx, list, client.MatchingFields{jobIDIndex: jobID}); err != nil {
		log.FromContext(ctx).Error(err, "Listing the Runner of a Nomad job failed", "nomadJobID", jobID)
		return
	}
	for i := range list.Items {
		if deregistered && !list.Items[i].DeletionTimestamp.IsZero() {
			continue
		}
		s.send(ctx, &list.Items[i])
	}
}

func (s *NomadEventSource) resync(ctx context.Context) {
	list := &v1alpha1.RunnerList{}
	if err := s.Reader.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "Listing Runners for a resync failed")
		return
	}
	for i := range list.Items {
		s.send(ctx, &list.Items[i])
	}
}

func (s *NomadEventSource) send(ctx context.Context, rn *v1alpha1.Runner) {
	select {
	case s.Out <- event.GenericEvent{Object: rn}:
	case <-ctx.Done():
	}
}

// OrphanCollector releases Nomad jobs that carry this operator instance's meta
// but whose Runner no longer exists: every job a deleted Runner's finalizer
// stopped (the finalizer only stops, so that no release waits for the tasks to
// end), and jobs left by a crash or an administrator's skip-cleanup. A live
// orphan is stopped on one pass and purged on a later one, once its tasks have
// ended (see nomadbridge.Client.ReleaseRunnerJob). Jobs without our meta are
// never touched. It runs at start and then every Interval, on the leader only.
type OrphanCollector struct {
	Bridge nomadbridge.Client
	// APIReader reads the API server directly: a job is only purged when the
	// server itself says its Runner is gone, never on a stale cache.
	APIReader client.Reader
	Interval  time.Duration
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (o *OrphanCollector) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable.
func (o *OrphanCollector) Start(ctx context.Context) error {
	interval := o.Interval
	if interval == 0 {
		interval = 5 * time.Minute
	}
	for {
		o.Collect(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval + rand.N(interval/5)):
		}
	}
}

// Collect runs one pass and returns the jobs it released (stopped or purged).
func (o *OrphanCollector) Collect(ctx context.Context) []string {
	logger := log.FromContext(ctx).WithName("orphans")
	jobs, err := o.Bridge.ListRunnerJobs(ctx)
	if err != nil {
		logger.Error(err, "Listing runner jobs in Nomad failed")
		return nil
	}
	var released []string
	for _, j := range jobs {
		rn := &v1alpha1.Runner{}
		err := o.APIReader.Get(ctx, types.NamespacedName{Namespace: j.Meta.Namespace, Name: j.Meta.Runner}, rn)
		switch {
		case err == nil && rn.Annotations[JobIDAnnotation] == j.ID && (j.Meta.UID == "" || j.Meta.UID == string(rn.UID)):
			// Its Runner (the very object, when the job records its UID).
			continue
		case err != nil && !apierrors.IsNotFound(err):
			logger.Error(err, "Reading the Runner of a Nomad job failed", "nomadJobID", j.ID)
			continue
		}
		// The listed meta is the owner: the job is released only if Nomad
		// still holds it with that meta when the collector acts.
		if err := o.Bridge.ReleaseRunnerJob(ctx, j.Namespace, j.ID, j.Meta); err != nil {
			logger.Error(err, "Releasing an orphaned Nomad job failed", "nomadJobID", j.ID)
			continue
		}
		if j.Status == "dead" {
			// The usual case: the job a deleted Runner's finalizer stopped.
			logger.V(1).Info("Released stopped Nomad job of a deleted Runner", "nomadJobID", j.ID, "runner", j.Meta.Namespace+"/"+j.Meta.Runner)
		} else {
			logger.Info("Released orphaned Nomad job", "nomadJobID", j.ID, "status", j.Status, "runner", j.Meta.Namespace+"/"+j.Meta.Runner)
		}
		released = append(released, j.ID)
	}
	return released
}
