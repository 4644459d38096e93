package nomadbridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// probeTimeout bounds one probe, whatever the client's call timeout.
const probeTimeout = 5 * time.Second

// Health asks Nomad every Interval whether it answers (Client.Ping) and
// remembers the answer.
type Health struct {
	Client Client
	// Interval between probes (default 5s), jittered by up to 20%.
	Interval time.Duration

	mu  sync.Mutex
	err error
}

// Err is the last probe's error; nil when Nomad answered or before the first probe.
func (h *Health) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Run probes Nomad until ctx ends. Each time Nomad stops answering or
// answers again, it calls changed (on Run's goroutine) with the new answer:
// the probe's error, or nil.
func (h *Health) Run(ctx context.Context, changed func(ctx context.Context, err error)) {
	interval := h.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	for {
		err := h.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		was := h.err
		h.err = err
		h.mu.Unlock()
		if (was == nil) != (err == nil) {
			changed(ctx, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval + rand.N(interval/5)):
		}
	}
}

func (h *Health) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := h.Client.Ping(ctx); err != nil {
		return fmt.Errorf("probe nomad: %w", err)
	}
	return nil
}
