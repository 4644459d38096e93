package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	nomad "github.com/hashicorp/nomad/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// --- raw Nomad -------------------------------------------------------------

// rawJobs are sleeping jobs registered straight to the agent, without the
// operator: the anchors' Nomad work.
type rawJobs struct {
	api    *nomad.Client
	prefix string
	ids    []string
}

func newRawJobs(e *env, prefix string, k int) *rawJobs {
	ids := make([]string, k)
	for i := range ids {
		ids[i] = prefix + "-" + uuid.NewString()
	}
	return &rawJobs{api: e.nomad, prefix: prefix, ids: ids}
}

func (j *rawJobs) write(ctx context.Context) *nomad.WriteOptions {
	return (&nomad.WriteOptions{}).WithContext(ctx)
}

func (j *rawJobs) register(ctx context.Context, i int) error {
	_, _, err := j.api.Jobs().Register(nomaddev.SleepJob(j.ids[i], nil), j.write(ctx))
	return err
}

func (j *rawJobs) query(ctx context.Context) *nomad.QueryOptions {
	return (&nomad.QueryOptions{Filter: fmt.Sprintf(`JobID matches "^%s-"`, j.prefix)}).WithContext(ctx)
}

// waitRunning waits until every job has a running allocation, at most
// timeout from start.
func (j *rawJobs) waitRunning(ctx context.Context, start time.Time, timeout time.Duration) error {
	for {
		allocs, _, err := j.api.Allocations().List(j.query(ctx))
		if err != nil {
			return err
		}
		running := map[string]bool{}
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning {
				running[a.JobID] = true
			}
		}
		if len(running) == len(j.ids) {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("only %d of %d raw jobs running after %.0fs (budget)", len(running), len(j.ids), timeout.Seconds())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// purge removes the jobs from Nomad's state; a job already gone is fine.
func (j *rawJobs) purge(ctx context.Context) error {
	return parallel(8, len(j.ids), func(i int) error {
		_, _, err := j.api.Jobs().DeregisterOpts(j.ids[i], &nomad.DeregisterOptions{Purge: true}, j.write(ctx))
		if err != nil && strings.Contains(err.Error(), "404") {
			return nil
		}
		return err
	})
}

// --- the pool --------------------------------------------------------------

// coldFill creates an environment of n runners and waits, at most timeout,
// until its pool is filled, sampling the live runners and Nomad jobs.
func coldFill(ctx context.Context, e *env, ns, name string, n int, timeout time.Duration) (time.Duration, int, int, error) {
	// Sample the live runners (informer) and Nomad's jobs throughout.
	var peak, peakJobs int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			list := &v1alpha1.RunnerList{}
			if e.cached.List(ctx, list, client.InNamespace(ns)) == nil {
				live := 0
				for _, rn := range list.Items {
					if rn.DeletionTimestamp.IsZero() {
						live++
					}
				}
				peak = max(peak, live)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			jobs, _, err := e.nomad.Jobs().PrefixList(name + "-")
			if err == nil {
				live := 0
				for _, j := range jobs {
					if j.Status != "dead" {
						live++
					}
				}
				peakJobs = max(peakJobs, live)
			}
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	if err := createEnvironment(ctx, e, ns, name, n); err != nil {
		close(stop)
		wg.Wait()
		return 0, 0, 0, err
	}
	err := waitFilled(ctx, e, ns, name, n, timeout)
	d := time.Since(start)
	time.Sleep(time.Second) // keep sampling a little after: an overshoot shows late
	close(stop)
	wg.Wait()
	return d, peak, peakJobs, err
}

// waitFilled waits until the environment reports its pool filled (PoolFilled
// True, n idle, current generation) and the harness's own cache sees n idle
// runners and nothing pending.
func waitFilled(ctx context.Context, e *env, ns, name string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		list := &v1alpha1.RunnerList{}
		if err := e.cached.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.EnvironmentLabel: name}); err != nil {
			return err
		}
		idle, other := 0, 0
		for _, rn := range list.Items {
			switch {
			case rn.Status.Phase == v1alpha1.RunnerIdle && rn.DeletionTimestamp.IsZero():
				idle++
			case rn.Status.Phase == v1alpha1.RunnerClaimed:
			default:
				other++
			}
		}
		if idle == n && other == 0 {
			ee := &v1alpha1.ExecutionEnvironment{}
			if err := e.direct.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ee); err != nil {
				return err
			}
			if meta.IsStatusConditionTrue(ee.Status.Conditions, v1alpha1.PoolFilledCondition) &&
				int(ee.Status.IdleRunners) == n && ee.Status.ObservedGeneration == ee.Generation {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool %s/%s not filled after %s: %d idle, %d other", ns, name, timeout, idle, other)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- claims ------------------------------------------------------------------

type sample struct {
	lat       []time.Duration
	wall      time.Duration
	conflicts int
}

// p is the nearest-rank percentile in milliseconds.
func (s sample) p(q int) float64 {
	if len(s.lat) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), s.lat...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	i := (q*len(l)+99)/100 - 1
	return float64(l[max(i, 0)].Microseconds()) / 1000
}

func (s sample) rate() float64 { return float64(len(s.lat)) / s.wall.Seconds() }

func idleRunners(ctx context.Context, e *env, ns, name string) ([]v1alpha1.Runner, error) {
	list := &v1alpha1.RunnerList{}
	if err := e.cached.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.EnvironmentLabel: name},
		client.MatchingFields{v1alpha1.PhaseField: string(v1alpha1.RunnerIdle)}); err != nil {
		return nil, err
	}
	var out []v1alpha1.Runner
	for _, rn := range list.Items {
		if rn.Status.Phase == v1alpha1.RunnerIdle {
			out = append(out, rn)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out, nil
}

// barePatches sends m status JSON patches (a test of the phase and one field
// written, the claim's shape without the claim) with c workers, each to another
// idle runner: the API server's own cost of the write a claim is. With raw set,
// its m Nomad jobs (one per patch, as each claim starts a refill) are
// registered first and the patches sent while Nomad places and starts them:
// the write beside the Nomad work the claims cause, without the operator. The
// jobs are removed before it returns.
func (b *bench) barePatches(ns, name string, c, m int, raw *rawJobs) (sample, error) {
	ctx, e := b.ctx, b.e
	runners, err := idleRunners(ctx, e, ns, name)
	if err != nil {
		return sample{}, err
	}
	if len(runners) < m {
		return sample{}, fmt.Errorf("only %d idle runners for %d bare patches", len(runners), m)
	}
	lat := make([]time.Duration, m)
	start := time.Now()
	if raw != nil {
		if err := parallel(8, m, func(i int) error { return raw.register(ctx, i) }); err != nil {
			_, rerr := b.removeRaw(raw)
			return sample{}, errors.Join(err, rerr)
		}
	}
	patched := time.Now()
	err = parallel(c, m, func(i int) error {
		patch := fmt.Sprintf(`[{"op":"test","path":"/status/phase","value":"Idle"},{"op":"add","path":"/status/message","value":"bench %s"}]`, uuid.NewString())
		t0 := time.Now()
		err := e.cached.Status().Patch(ctx, &runners[i], client.RawPatch(types.JSONPatchType, []byte(patch)))
		lat[i] = time.Since(t0)
		return err
	})
	wall := time.Since(patched)
	if raw != nil {
		if err == nil {
			err = raw.waitRunning(ctx, start, b.within(b.pace.startBudget(m)))
		}
		_, rerr := b.removeRaw(raw)
		err = errors.Join(err, rerr)
	}
	return sample{lat: lat, wall: wall}, err
}

// claims takes m runners with claim.Claim over c workers, each claimer reading
// idle runners from an informer cache as a long-running claimer service would,
// and waiting at most timeout for one.
func claims(ctx context.Context, e *env, ns, name string, c, m int, timeout time.Duration) (sample, []*v1alpha1.Runner, error) {
	lat := make([]time.Duration, m)
	got := make([]*v1alpha1.Runner, m)
	var mu sync.Mutex
	conflicts := 0
	start := time.Now()
	err := parallel(c, m, func(i int) error {
		st := &claim.Stats{}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		t0 := time.Now()
		rn, err := claim.Claim(cctx, e.claimer, ns, name, claim.Options{Holder: fmt.Sprintf("bench-%d", i), Wait: true, RetryInterval: 20 * time.Millisecond, Stats: st})
		lat[i] = time.Since(t0)
		got[i] = rn
		mu.Lock()
		conflicts += st.Conflicts
		mu.Unlock()
		return err
	})
	return sample{lat: lat, wall: time.Since(start), conflicts: conflicts}, got, err
}

// --- Nomad calls -------------------------------------------------------------

// lifetime counts, over every runner job whose life ended in this run (it was
// registered and purged through the proxy), the Nomad writes and reads that
// named it.
func lifetime(r *results, e *env) {
	var writes, reads []float64
	for id, m := range e.counter.IDs() {
		if !strings.HasPrefix(id, "cold") || m["DELETE /v1/job/:id"] == 0 || m["PUT /v1/jobs"] == 0 {
			continue
		}
		w, rd := 0, 0
		for k, v := range m {
			if strings.HasPrefix(k, "GET ") {
				rd += v
			} else {
				w += v
			}
		}
		writes, reads = append(writes, float64(w)), append(reads, float64(rd))
	}
	r.Lifetimes = len(writes)
	r.Figures = append(r.Figures, figure{Name: "nomad_writes_per_runner_lifetime", Values: writes})
	r.Figures = append(r.Figures, figure{Name: "nomad_reads_per_runner_lifetime", Values: reads})
	r.TotalCalls = nomaddev.Diff(nil, e.counter.Snapshot())
}

type resyncResult struct {
	lists, perRunnerReads float64
	calls                 []nomaddev.KeyCount
}

// resync cuts the operator's event stream and counts its Nomad calls until it
// has reconnected and reconciled every runner again, at most timeout.
func resync(ctx context.Context, e *env, timeout time.Duration) (resyncResult, error) {
	time.Sleep(2 * time.Second) // quiet
	before := e.counter.Snapshot()
	reconciles := e.runnerReconciles()
	opened := before["GET /v1/event/stream"]
	list := &v1alpha1.RunnerList{}
	if err := e.direct.List(ctx, list); err != nil {
		return resyncResult{}, err
	}
	e.counter.CutStreams()
	deadline := time.Now().Add(timeout)
	for e.counter.Count("GET /v1/event/stream") <= opened || e.runnerReconciles()-reconciles < float64(len(list.Items)) {
		if time.Now().After(deadline) {
			return resyncResult{}, errors.New("no resync after cutting the event stream")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the last reconciles finish
	res := resyncResult{calls: nomaddev.Diff(before, e.counter.Snapshot())}
	perRunner := 0
	for _, kc := range res.calls {
		switch {
		case kc.Key == "GET /v1/allocations" || kc.Key == "GET /v1/jobs":
			res.lists += float64(kc.Count)
		case strings.Contains(kc.Key, ":id"):
			perRunner += kc.Count
		}
	}
	res.perRunnerReads = float64(perRunner) / float64(max(len(list.Items), 1))
	return res, nil
}

// --- memory ------------------------------------------------------------------

// memoryBench samples the operator's memory with the claim pool, then with
// objects Runner objects more, once it has reconciled them (waiting at most
// wait).
func memoryBench(ctx context.Context, e *env, r *results, objects int, wait time.Duration, logf func(string, ...any)) error {
	sampleMem := func(prefix string) {
		for range 3 {
			rss, hwm, heap := e.memory()
			r.add(prefix+"_rss_mib", rss/(1<<20))
			r.add(prefix+"_peak_rss_mib", hwm/(1<<20))
			r.add(prefix+"_heap_inuse_mib", heap/(1<<20))
			time.Sleep(2 * time.Second)
		}
	}
	sampleMem(fmt.Sprintf("memory_%d_runners", r.Config.ClaimPool))
	ns := "bench-memory"
	if err := e.direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	reconciles := e.runnerReconciles()
	start := time.Now()
	// Runners as the operator makes them, with an Idle runner's status, but no
	// job annotation: the operator caches and reconciles them without Nomad
	// (the dev node cannot run thousands of jobs).
	err := parallel(16, objects, func(i int) error {
		rn := &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("mem-%05d", i), Namespace: ns,
				Labels: map[string]string{v1alpha1.EnvironmentLabel: "mem"},
			},
			Spec: v1alpha1.RunnerSpec{Environment: "mem", TemplateHash: "0123456789abcdef"},
		}
		if err := e.direct.Create(ctx, rn); err != nil {
			return err
		}
		now := metav1.Now()
		rn.Status = v1alpha1.RunnerStatus{
			Phase: v1alpha1.RunnerIdle, NomadJobID: "mem-" + uuid.NewString(), NomadNamespace: "default",
			AllocationID: uuid.NewString(), NodeName: "bench-node", Address: "127.0.0.1",
			Ports: []v1alpha1.RunnerPort{{Label: "http", HostIP: "127.0.0.1", Port: 20000 + int32(i%10000), To: 8080}},
			Conditions: []metav1.Condition{{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAsExpected,
				Message: "Allocation 01234567 is running.", LastTransitionTime: now}},
		}
		return e.direct.Status().Update(ctx, rn)
	})
	if err != nil {
		return err
	}
	logf("created %d Runner objects in %.1fs", objects, time.Since(start).Seconds())
	deadline := time.Now().Add(wait)
	for e.runnerReconciles()-reconciles < float64(objects) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	sampleMem(fmt.Sprintf("memory_%d_objects", objects))
	rss, _, heap := e.memory()
	logf("operator with %d + %d runners: RSS %.1f MiB, heap in use %.1f MiB", objects, r.Config.ClaimPool, rss/(1<<20), heap/(1<<20))
	return nil
}

// parallel runs f(0..n-1) on c workers and returns the first error.
func parallel(c, n int, f func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range min(c, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}
