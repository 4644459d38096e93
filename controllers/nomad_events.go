package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// NomadEventSource turns what its Watcher reads from Nomad's event stream into
// reconciles of Runners, through a channel the Runner controller watches: an
// event about a job enqueues that job's Runner, and every (re)connect of the
// stream enqueues every Runner. It runs on the leader only.
type NomadEventSource struct {
	Watcher *nomadbridge.Watcher
	// Reader is the manager's cache (runners are found by the job-ID index).
	Reader client.Reader
	// Out is the channel the Runner controller watches.
	Out chan<- event.GenericEvent
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *NomadEventSource) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable; it returns when ctx ends.
func (s *NomadEventSource) Start(ctx context.Context) error {
	return s.Watcher.Run(log.IntoContext(ctx, log.FromContext(ctx).WithName("nomad-events")), s)
}

// Connected tells whether the stream is open right now (readiness).
func (s *NomadEventSource) Connected() bool { return s.Watcher.Connected() }

// JobChanged implements nomadbridge.Handler: it sends the runners of a job. A
// deregistration is not sent to a runner being deleted: it is the runner's own
// purge coming back, and another reconcile would only purge again.
func (s *NomadEventSource) JobChanged(ctx context.Context, jobID string, deregistered bool) {
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

// Resync implements nomadbridge.Handler: it sends every runner.
func (s *NomadEventSource) Resync(ctx context.Context) {
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

// streamMetrics reports the event stream in the operator's metrics.
type streamMetrics struct{}

var _ nomadbridge.StreamMetrics = streamMetrics{}

func (streamMetrics) Connected(up bool) {
	if up {
		metrics.EventStreamConnected.Set(1)
	} else {
		metrics.EventStreamConnected.Set(0)
	}
}

func (streamMetrics) Reconnected()                    { metrics.EventStreamReconnects.Inc() }
func (streamMetrics) BatchRead(index uint64)          { metrics.EventStreamIndex.Set(float64(index)) }
func (streamMetrics) AllocationRead(modifyTime int64) { metrics.ObserveEventLag(modifyTime) }
