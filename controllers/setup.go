package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// Options configure the controllers; main.go and the test suites fill them.
type Options struct {
	Bridge nomadbridge.Client
	// DefaultTemplate is the runner job (HCL or JSON) for environments without
	// templateJob ("": nomadbridge.DefaultTemplate).
	DefaultTemplate string
	// Clock drives inactivity timeouts (nil: the real clock).
	Clock clock.PassiveClock
	// MaxConcurrentReconciles per controller (0: 4).
	MaxConcurrentReconciles int
	// MaxConcurrentRunnerReconciles for the Runner controller (0: 16). Its
	// reconciles wait on Nomad and API writes, not on CPU, and every allocation
	// event of a filling pool goes through its queue, so it needs more workers
	// than the environment controller for a pool to fill at Nomad's pace.
	MaxConcurrentRunnerReconciles int
	// OrphanInterval is how often orphaned Nomad jobs are collected (0: 5 min).
	OrphanInterval time.Duration
	// NomadProbeInterval is how often Nomad's reachability is checked (0: 5s).
	NomadProbeInterval time.Duration
	// CrashLoopBaseDelay is the first backoff before replacing runners that keep
	// failing unclaimed; it doubles per failure up to 5 min (0: 1s).
	CrashLoopBaseDelay time.Duration
	// StatusCountsInterval spaces an environment's status writes that only
	// change runner counts (0: 1s; negative: write every change).
	StatusCountsInterval time.Duration
}

// Setup registers both controllers, the Nomad event source and the orphan
// collector with mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.MaxConcurrentRunnerReconciles == 0 {
		o.MaxConcurrentRunnerReconciles = 16
	}
	if o.StatusCountsInterval == 0 {
		o.StatusCountsInterval = time.Second
	}
	renderer := &Renderer{Bridge: o.Bridge, DefaultTemplate: o.DefaultTemplate, Policies: &Policies{Reader: mgr.GetClient()}}
	nomadEvents := make(chan event.GenericEvent, 1024)
	store := nomadbridge.NewJobStore(o.Clock)
	opts := controller.Options{MaxConcurrentReconciles: o.MaxConcurrentReconciles}

	if err := (&RunnerReconciler{
		Client:      mgr.GetClient(),
		Bridge:      o.Bridge,
		Renderer:    renderer,
		Recorder:    mgr.GetEventRecorder("runner-controller"),
		Clock:       o.Clock,
		NomadEvents: nomadEvents,
		Store:       store,
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: o.MaxConcurrentRunnerReconciles}); err != nil {
		return fmt.Errorf("set up runner controller: %w", err)
	}
	health := &NomadHealth{Health: &nomadbridge.Health{Client: o.Bridge, Interval: o.NomadProbeInterval}, Reader: mgr.GetClient()}
	crashLoops := NewCrashLoopBackoff(o.Clock)
	crashLoops.Base = o.CrashLoopBaseDelay
	if err := (&ExecutionEnvironmentReconciler{
		Client:            mgr.GetClient(),
		Renderer:          renderer,
		Recorder:          mgr.GetEventRecorder("executionenvironment-controller"),
		Expectations:      NewExpectations(o.Clock),
		CrashLoops:        crashLoops,
		Nomad:             health,
		MaxCreatesPerPass: 50,
		MaxSurge:          1,
		// The real clock: a held write must come due even under a test's clock.
		StatusBatch: NewStatusBatcher(o.StatusCountsInterval, clock.RealClock{}),
	}).SetupWithManager(mgr, opts); err != nil {
		return fmt.Errorf("set up executionenvironment controller: %w", err)
	}
	if err := mgr.Add(health); err != nil {
		return fmt.Errorf("add nomad health probe: %w", err)
	}
	eventSource := &NomadEventSource{
		Watcher: &nomadbridge.Watcher{Client: o.Bridge, Store: store, Metrics: streamMetrics{}},
		Reader:  mgr.GetClient(),
		Out:     nomadEvents,
	}
	if err := mgr.Add(eventSource); err != nil {
		return fmt.Errorf("add nomad event source: %w", err)
	}
	leading := isClosed(mgr.Elected())
	if err := mgr.AddReadyzCheck("nomad-event-stream", func(*http.Request) error {
		// Only the leader reads the stream. A standby is ready to take over (and
		// must count as ready, or a rolling update of two replicas never ends).
		if leading() && !eventSource.Connected() {
			return errors.New("the Nomad event stream is not connected")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add event stream readiness check: %w", err)
	}
	metrics.SetPoolSource(mgr.GetCache(), leading)
	if err := mgr.Add(&OrphanCollector{Bridge: o.Bridge, APIReader: mgr.GetAPIReader(), Interval: o.OrphanInterval}); err != nil {
		return fmt.Errorf("add orphan collector: %w", err)
	}
	return nil
}

// isClosed returns a func telling whether ch is closed yet.
func isClosed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}
