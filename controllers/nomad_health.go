package controllers

import (
	"context"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// NomadHealth runs the Nomad Health probe and, on every change, enqueues all
// environments, whose NomadReachable condition follows it. While Nomad is down
// environments create nothing and the probe is the only periodic caller
// (runner reconciles that fail retry with the controller's per-item
// exponential backoff). It runs on the leader only.
type NomadHealth struct {
	Health *nomadbridge.Health
	// Reader lists environments to enqueue (the manager's cache).
	Reader client.Reader

	mu      sync.Mutex
	changes chan event.GenericEvent
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (h *NomadHealth) NeedLeaderElection() bool { return true }

// Changes is the channel the environment controller watches.
func (h *NomadHealth) Changes() <-chan event.GenericEvent { return h.channel() }

func (h *NomadHealth) channel() chan event.GenericEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changes == nil {
		h.changes = make(chan event.GenericEvent, 256)
	}
	return h.changes
}

// Err is the last probe's error; nil when Nomad answered (or h is nil).
func (h *NomadHealth) Err() error {
	if h == nil {
		return nil
	}
	return h.Health.Err()
}

// Start implements manager.Runnable.
func (h *NomadHealth) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("nomad-health")
	changes := h.channel()
	h.Health.Run(ctx, func(ctx context.Context, err error) {
		if err != nil {
			logger.Error(err, "Nomad stopped answering; holding runner creations")
		} else {
			logger.Info("Nomad answers again")
		}
		h.enqueueAll(ctx, changes)
	})
	return nil
}

func (h *NomadHealth) enqueueAll(ctx context.Context, out chan<- event.GenericEvent) {
	list := &v1alpha1.ExecutionEnvironmentList{}
	if err := h.Reader.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "Listing ExecutionEnvironments after a Nomad health change failed")
		return
	}
	for i := range list.Items {
		select {
		case out <- event.GenericEvent{Object: &list.Items[i]}:
		case <-ctx.Done():
			return
		}
	}
}
