package controllers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// Pinger is implemented by bridges that can check Nomad cheaply
// (nomadbridge.NomadClient asks for the cluster leader).
type Pinger interface {
	Ping(ctx context.Context) error
}

// NomadHealth asks Nomad every Interval whether it answers and, on every change,
// enqueues all environments, whose NomadReachable condition follows it. While
// Nomad is down environments create nothing and the probe is the only periodic
// caller (runner reconciles that fail retry with the controller's per-item
// exponential backoff). It runs on the leader only.
type NomadHealth struct {
	Bridge nomadbridge.Client
	// Reader lists environments to enqueue (the manager's cache).
	Reader client.Reader
	// Interval between probes (default 5s), jittered by up to 20%.
	Interval time.Duration

	mu      sync.Mutex
	err     error
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
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Start implements manager.Runnable.
func (h *NomadHealth) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("nomad-health")
	interval := h.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	changes := h.channel()
	for {
		err := h.probe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		h.mu.Lock()
		was := h.err
		h.err = err
		h.mu.Unlock()
		if (was == nil) != (err == nil) {
			if err != nil {
				logger.Error(err, "Nomad stopped answering; holding runner creations", "probeInterval", interval)
			} else {
				logger.Info("Nomad answers again")
			}
			h.enqueueAll(ctx, changes)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval + rand.N(interval/5)):
		}
	}
}

func (h *NomadHealth) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	if p, ok := h.Bridge.(Pinger); ok {
		err = p.Ping(ctx)
	} else {
		_, err = h.Bridge.MemoryOversubscription(ctx)
	}
	if err != nil {
		return fmt.Errorf("probe nomad: %w", err)
	}
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
