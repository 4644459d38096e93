// Package metrics defines the operator's Prometheus metrics. They live on
// controller-runtime's registry, so the manager's metrics endpoint serves them
// next to the controller-runtime and client-go ones (workqueue depth, reconcile
// errors and durations, REST client latency).
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/internal/runnerphase"
)

const namespace = "nomadrunner"

var (
	// RunnerStartup is the time from a Runner's creation (its Nomad job is
	// registered right after) until it turned Idle.
	RunnerStartup = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "runner_startup_seconds",
		Help:      "Time from a Runner's creation (its Nomad job is registered at once) until its allocation runs and it turns Idle.",
		Buckets:   []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300},
	}, []string{"namespace", "environment"})

	// Claims counts runners the operator saw go from Idle to Claimed.
	Claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "claims_total",
		Help:      "Runners seen turning from Idle to Claimed.",
	}, []string{"namespace", "environment"})

	// ClaimConflicts counts the operator's own status writes that the optimistic
	// lock turned down: mostly a concurrent claim or renewal (the client's write
	// wins, as it must), sometimes a cache not yet showing the operator's last write.
	ClaimConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "claim_conflicts_total",
		Help:      "Runner status writes of the operator refused with a conflict: a client claimed or renewed the runner meanwhile (the client wins), or the operator's cache was behind its own last write.",
	})

	// NomadRequests, NomadRequestErrors and NomadRequestDuration describe every
	// HTTP call to Nomad's API, by method and path pattern (IDs replaced by :id).
	NomadRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "nomad_requests_total",
		Help:      "HTTP requests to Nomad's API by method, path pattern and status code (\"error\": no response).",
	}, []string{"method", "path", "code"})
	NomadRequestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "nomad_request_errors_total",
		Help:      "Nomad API requests that failed: no response, or a status of 400 and above other than 404 (which the operator reads as \"gone\").",
	}, []string{"method", "path"})
	NomadRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "nomad_request_duration_seconds",
		Help:      "Time until Nomad's API answered (response headers; for the event stream, until it was opened).",
		Buckets:   []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"method", "path"})

	// EventStreamConnected is 1 while the leader reads Nomad's event stream.
	EventStreamConnected = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "nomad_event_stream_connected",
		Help:      "1 while this replica reads Nomad's event stream (only the leader does), else 0.",
	})
	// EventStreamReconnects counts (re)connections after the first.
	EventStreamReconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "nomad_event_stream_reconnects_total",
		Help:      "Times the Nomad event stream was opened again after it broke; each reconnect resumes at the last index and resyncs all runners.",
	})
	// EventStreamLag is how long after Nomad changed an allocation the operator
	// received the event.
	EventStreamLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "nomad_event_stream_lag_seconds",
		Help:      "Delay between an allocation's modify time in Nomad and the operator receiving its event.",
		Buckets:   []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
	// EventStreamIndex is the last Nomad index the operator received.
	EventStreamIndex = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "nomad_event_stream_index",
		Help:      "Raft index of the last event received from Nomad.",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(
		RunnerStartup, Claims, ClaimConflicts,
		NomadRequests, NomadRequestErrors, NomadRequestDuration,
		EventStreamConnected, EventStreamReconnects, EventStreamLag, EventStreamIndex,
		pool,
	)
}

// ObserveEventLag records the lag of an event about a change Nomad made at modifyTime
// (Unix nanoseconds, as Nomad reports it).
func ObserveEventLag(modifyTime int64) {
	if modifyTime > 0 {
		EventStreamLag.Observe(time.Since(time.Unix(0, modifyTime)).Seconds())
	}
}

var (
	runnersDesc = prometheus.NewDesc(namespace+"_runners", "Runners by phase, per environment (a runner without a status yet is Pending); runners being deleted are not counted.",
		[]string{"namespace", "environment", "phase"}, nil)
	poolTargetDesc = prometheus.NewDesc(namespace+"_pool_target", "Idle runners each environment asks for (spec.prewarmingPoolSize).",
		[]string{"namespace", "environment"}, nil)
)

// pool reports the pool gauges. It counts the cache at scrape time instead of
// keeping counters in step with every change, so a gauge cannot drift from the
// objects it describes.
var pool = &poolCollector{}

type poolCollector struct {
	mu     sync.Mutex
	reader client.Reader
	active func() bool
}

// SetPoolSource makes the pool gauges count the objects of reader (the manager's
// cache) while active() is true: on the leader, whose cache holds the Runners. A
// standby reports no pool gauges rather than starting informers of its own.
func SetPoolSource(reader client.Reader, active func() bool) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	pool.reader, pool.active = reader, active
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runnersDesc
	ch <- poolTargetDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	reader, active := c.reader, c.active
	c.mu.Unlock()
	if reader == nil || !active() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	envs := &v1alpha1.ExecutionEnvironmentList{}
	runners := &v1alpha1.RunnerList{}
	// Read-only use of cached objects: no deep copies of thousands of runners per scrape.
	if reader.List(ctx, envs, client.UnsafeDisableDeepCopy) != nil || reader.List(ctx, runners, client.UnsafeDisableDeepCopy) != nil {
		return
	}
	type key struct{ ns, env string }
	counts := map[key]*runnerphase.Counts{}
	for _, ee := range envs.Items {
		counts[key{ee.Namespace, ee.Name}] = &runnerphase.Counts{}
		ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(ee.Spec.PrewarmingPoolSize), ee.Namespace, ee.Name)
	}
	for i := range runners.Items {
		rn := &runners.Items[i]
		if !runnerphase.Counted(rn) {
			continue
		}
		k := key{rn.Namespace, rn.Spec.Environment}
		if counts[k] == nil {
			counts[k] = &runnerphase.Counts{}
		}
		counts[k].Add(rn)
	}
	for k, c := range counts {
		// Every phase is reported, 0 included, so a drained pool shows as 0 rather than vanishing.
		for _, p := range runnerphase.Phases {
			ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, float64(c.InPhase(p)), k.ns, k.env, string(p))
		}
	}
}
