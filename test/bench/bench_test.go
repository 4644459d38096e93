// Package bench measures the operator against its physical limits (a bare API
// write, raw Nomad) on a real control plane and a real Nomad dev agent, and
// writes docs/BENCHMARKS.md and docs/benchmarks.json. It runs only with
// NRO_BENCH=1 (make bench), never in make test: figures are reported, never
// asserted.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
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

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestBench(t *testing.T) {
	if os.Getenv("NRO_BENCH") == "" {
		t.Skip("benchmarks run with NRO_BENCH=1 (make bench)")
	}
	cfg := config{
		Reps:    envInt("BENCH_REPS", 3),
		N:       envInt("BENCH_N", 200),
		Objects: envInt("BENCH_OBJECTS", 5000),
		// The claims run on a smaller pool than the cold fill: each idle
		// raw_exec runner is a Nomad executor and logmon process, and 200 of
		// them plus the claimed ones overload 2 cores.
		ClaimPool:  envInt("BENCH_CLAIM_POOL", 100),
		Claimers:   []int{1, 8, 32},
		NomadNiced: os.Getenv("BENCH_NOMAD_NICED") != "0",
		Claims:     map[int]int{1: 16, 8: 32, 32: 64},
	}
	cfg.ClaimPool = min(cfg.ClaimPool, cfg.N)
	for c, m := range cfg.Claims { // small smoke runs (BENCH_N=20)
		cfg.Claims[c] = min(m, cfg.ClaimPool/2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := time.Now()
	e := startEnv(ctx, t)
	r := &results{Config: cfg, Started: started.UTC().Format(time.RFC3339)}
	r.Machine = machine(e)
	// Write what is measured after each section, so a run cut short still
	// leaves its figures.
	checkpoint := func() {
		r.Duration = time.Since(started).Round(time.Second).String() + " (so far)"
		if err := r.write(e.root); err != nil {
			t.Error(err)
		}
	}
	logf := func(format string, args ...any) {
		t.Logf("%6.1fs "+format, append([]any{time.Since(started).Seconds()}, args...)...)
	}

	// Every section runs in each topology: all processes sharing the CPUs
	// alike, and the control plane served first, as on machines of its own in
	// production (see deprioritiseNomad). Each has its own anchors.
	pin := func(tp topology) {
		if err := deprioritiseNomad(tp.niced); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { _ = deprioritiseNomad(false) }()

	var ns, envName string
	for _, tp := range cfg.topologies() {
		pin(tp)
		// Raw Nomad anchors: K jobs registered (8 callers) until all run.
		for _, k := range []int{cfg.Claims[32], cfg.N} {
			for rep := range cfg.Reps {
				r0 := e.read(ctx)
				d, err := rawNomad(ctx, e.nomad, k, fmt.Sprintf("raw%d-%d", k, rep), func() {
					e.cost(ctx, r, fmt.Sprintf("raw_nomad_%d%s", k, tp.suffix), r0, k)
				})
				if err != nil {
					t.Fatalf("raw nomad %d: %v", k, err)
				}
				r.add(fmt.Sprintf("raw_nomad_register_to_running_%d_s%s", k, tp.suffix), d.Seconds())
				logf("raw Nomad %d jobs register→running%s: %.2fs", k, tp.suffix, d.Seconds())
			}
		}
		checkpoint()

		// Cold fill 0 → N, the last pool is kept (scaled to the claim pool) for the claims.
		for rep := range cfg.Reps {
			if ns != "" {
				if err := deleteEnvironment(ctx, e, ns, envName); err != nil {
					t.Fatal(err)
				}
			}
			ns, envName = fmt.Sprintf("bench-cold%s-%d", strings.ReplaceAll(tp.suffix, "_", "-"), rep), fmt.Sprintf("cold%d%s", rep, strings.ReplaceAll(tp.suffix, "_", "-"))
			r0 := e.read(ctx)
			profiled := e.profile(fmt.Sprintf("cold-fill%s-%d", tp.suffix, rep), 20*time.Second)
			d, peak, peakJobs, err := coldFill(ctx, e, ns, envName, cfg.N)
			profiled()
			if err != nil {
				t.Fatalf("cold fill: %v\n%s", err, tail(e.opLog))
			}
			e.cost(ctx, r, "cold_fill"+tp.suffix, r0, cfg.N)
			r.add("cold_fill_s"+tp.suffix, d.Seconds())
			r.add("cold_fill_peak_live_runners"+tp.suffix, float64(peak))
			r.add("cold_fill_peak_nomad_jobs"+tp.suffix, float64(peakJobs))
			logf("cold fill %d%s: %.2fs, peak %d runners, %d Nomad jobs", cfg.N, tp.suffix, d.Seconds(), peak, peakJobs)
		}

		if err := setPool(ctx, e, ns, envName, cfg.ClaimPool); err != nil {
			t.Fatal(err)
		}
		checkpoint()

		// Claims next to a bare status PATCH, and the refill after each drain. Each
		// repetition on shared CPUs measures twice: with the operator running (it
		// refills while the claims go on: the real figure), and with the operator
		// stopped (SIGSTOP) during the claims, which leaves only the claim path itself.
		for _, c := range cfg.Claimers {
			m := cfg.Claims[c]
			for range cfg.Reps {
				for _, paused := range []bool{false, true} {
					if paused && tp.niced {
						continue
					}
					suffix := tp.suffix
					if paused {
						suffix = "_operator_paused"
					}
					if err := waitFilled(ctx, e, ns, envName, cfg.ClaimPool, 3*time.Minute); err != nil {
						t.Fatal(err)
					}
					if paused {
						e.pause()
					}
					bare, err := barePatches(ctx, e, ns, envName, c, m, nil)
					if err != nil {
						e.resume()
						t.Fatal(err)
					}
					if !paused {
						// The same patches, each starting the Nomad job a claim's refill starts.
						beside, err := barePatches(ctx, e, ns, envName, c, m, newRawJobs(e.nomad, fmt.Sprintf("rawpatch%d", c), m))
						if err != nil {
							t.Fatal(err)
						}
						r.add(fmt.Sprintf("bare_patch_beside_nomad_p99_ms_c%d%s", c, suffix), beside.p(99))
						r.add(fmt.Sprintf("bare_patch_beside_nomad_per_s_c%d%s", c, suffix), beside.rate())
						logf("c=%d m=%d%s: bare beside Nomad p50 %.1fms p99 %.1fms %.0f/s", c, m, suffix, beside.p(50), beside.p(99), beside.rate())
					}
					var r0 reading
					profiled := func() {}
					if !paused { // a paused operator answers no scrape
						r0 = e.read(ctx)
						profiled = e.profile(fmt.Sprintf("claims-c%d%s", c, suffix), 5*time.Second)
					}
					cl, claimed, err := claims(ctx, e, ns, envName, c, m)
					drained := time.Now()
					e.resume()
					if err != nil {
						t.Fatal(err)
					}
					r.add(fmt.Sprintf("bare_patch_p50_ms_c%d%s", c, suffix), bare.p(50))
					r.add(fmt.Sprintf("bare_patch_p99_ms_c%d%s", c, suffix), bare.p(99))
					r.add(fmt.Sprintf("bare_patch_per_s_c%d%s", c, suffix), bare.rate())
					r.add(fmt.Sprintf("claim_p50_ms_c%d%s", c, suffix), cl.p(50))
					r.add(fmt.Sprintf("claim_p99_ms_c%d%s", c, suffix), cl.p(99))
					r.add(fmt.Sprintf("claim_per_s_c%d%s", c, suffix), cl.rate())
					r.add(fmt.Sprintf("claim_conflicts_per_claim_c%d%s", c, suffix), float64(cl.conflicts)/float64(len(cl.lat)))
					if err := waitFilled(ctx, e, ns, envName, cfg.ClaimPool, 3*time.Minute); err != nil {
						t.Fatal(err)
					}
					refill := time.Since(drained)
					profiled()
					if !paused {
						r.add(fmt.Sprintf("refill_%d_s_c%d%s", m, c, suffix), refill.Seconds())
						// What a claim and the refill it causes cost, per claim.
						e.cost(ctx, r, fmt.Sprintf("claim_refill_c%d%s", c, suffix), r0, m)
					}
					logf("c=%d m=%d%s: bare p50 %.1fms p99 %.1fms %.0f/s; claim p50 %.1fms p99 %.1fms %.0f/s, %.2f conflicts/claim; refill %.2fs",
						c, m, suffix, bare.p(50), bare.p(99), bare.rate(), cl.p(50), cl.p(99), cl.rate(), float64(cl.conflicts)/float64(len(cl.lat)), refill.Seconds())
					if c == 32 && !paused {
						// The refill's anchor on the same node as the refill: the
						// full pool and the claimed runners running beside it
						// (their executors and logmon processes cost CPU too).
						d, err := rawNomad(ctx, e.nomad, m, fmt.Sprintf("rawpool%d", m), func() {})
						if err != nil {
							t.Fatalf("raw nomad beside the pool: %v", err)
						}
						r.add(fmt.Sprintf("raw_nomad_register_to_running_%d_s_beside_pool%s", m, tp.suffix), d.Seconds())
						logf("raw Nomad %d jobs register→running beside the pool%s: %.2fs", m, tp.suffix, d.Seconds())
					}
					if err := release(ctx, e, claimed); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	_ = deprioritiseNomad(false) // needs CAP_SYS_NICE; the sections below barely use Nomad

	checkpoint()

	// Nomad calls: per runner lifetime over the whole run, then one forced
	// event-stream reconnect (a resync of every runner).
	lifetime(r, e)
	for rep := range cfg.Reps {
		rs, err := resync(ctx, e, cfg.ClaimPool)
		if err != nil {
			t.Fatal(err)
		}
		r.add("resync_per_runner_reads", rs.perRunnerReads)
		r.add("resync_list_calls", rs.lists)
		r.ResyncCalls = rs.calls
		logf("resync %d: %.0f list calls, %.3f reads per runner; calls %v", rep, rs.lists, rs.perRunnerReads, rs.calls)
	}

	checkpoint()

	// Operator memory with many Runner objects.
	if err := memoryBench(ctx, e, r, cfg.Objects, logf); err != nil {
		t.Fatal(err)
	}

	r.Duration = time.Since(started).Round(time.Second).String()
	if err := r.write(e.root); err != nil {
		t.Fatal(err)
	}
	logf("wrote docs/BENCHMARKS.md and docs/benchmarks.json")
}

// topology is how the processes share the CPUs: all alike, or with Nomad
// served last (figures suffixed _nomad_niced).
type topology struct {
	suffix string
	niced  bool
}

func (c config) topologies() []topology {
	t := []topology{{}}
	if c.NomadNiced {
		t = append(t, topology{suffix: "_nomad_niced", niced: true})
	}
	return t
}

type config struct {
	// NomadNiced runs every section a second time with Nomad at the lowest
	// CPU priority (BENCH_NOMAD_NICED=0 turns it off).
	NomadNiced bool `json:"nomadNiced"`

	Reps      int         `json:"repetitions"`
	N         int         `json:"coldFillN"`
	Objects   int         `json:"memoryObjects"`
	ClaimPool int         `json:"claimPool"`
	Claimers  []int       `json:"claimers"`
	Claims    map[int]int `json:"claimsPerRepetition"`
}

// --- raw Nomad -------------------------------------------------------------

// rawNomad registers k jobs and waits until all run; running is called then,
// before the jobs are stopped and purged.
func rawNomad(ctx context.Context, api *nomad.Client, k int, prefix string, running func()) (time.Duration, error) {
	jobs := newRawJobs(api, prefix, k)
	start := time.Now()
	if err := parallel(8, k, func(i int) error { return jobs.register(ctx, i) }); err != nil {
		return 0, err
	}
	if err := jobs.waitRunning(ctx, start); err != nil {
		return 0, err
	}
	d := time.Since(start)
	running()
	return d, jobs.remove(ctx)
}

// rawJobs are sleeping jobs registered straight to the agent, without the
// operator: the anchors' Nomad work.
type rawJobs struct {
	api    *nomad.Client
	prefix string
	ids    []string
}

func newRawJobs(api *nomad.Client, prefix string, k int) *rawJobs {
	ids := make([]string, k)
	for i := range ids {
		ids[i] = prefix + "-" + uuid.NewString()
	}
	return &rawJobs{api: api, prefix: prefix, ids: ids}
}

func (j *rawJobs) register(ctx context.Context, i int) error {
	_, _, err := j.api.Jobs().Register(nomaddev.SleepJob(j.ids[i], nil), (&nomad.WriteOptions{}).WithContext(ctx))
	return err
}

func (j *rawJobs) query(ctx context.Context) *nomad.QueryOptions {
	return (&nomad.QueryOptions{Filter: fmt.Sprintf(`JobID matches "^%s-"`, j.prefix)}).WithContext(ctx)
}

// waitRunning waits until every job has a running allocation.
func (j *rawJobs) waitRunning(ctx context.Context, start time.Time) error {
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
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("only %d of %d raw jobs running", len(running), len(j.ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// remove stops the jobs, waits until the client has stopped every task, and
// purges them: a purge alone leaves the tasks running for minutes on a dev
// agent, and hundreds of leftover processes would weigh on every later figure.
func (j *rawJobs) remove(ctx context.Context) error {
	if err := parallel(8, len(j.ids), func(i int) error {
		_, _, err := j.api.Jobs().Deregister(j.ids[i], false, (&nomad.WriteOptions{}).WithContext(ctx))
		return err
	}); err != nil {
		return err
	}
	for deadline := time.Now().Add(3 * time.Minute); ; {
		allocs, _, err := j.api.Allocations().List(j.query(ctx))
		if err != nil {
			return err
		}
		live := 0
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending {
				live++
			}
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d raw allocations still live after stop", live)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return parallel(8, len(j.ids), func(i int) error {
		_, _, err := j.api.Jobs().DeregisterOpts(j.ids[i], &nomad.DeregisterOptions{Purge: true}, (&nomad.WriteOptions{}).WithContext(ctx))
		return err
	})
}

// --- the pool --------------------------------------------------------------

func coldFill(ctx context.Context, e *env, ns, name string, n int) (time.Duration, int, int, error) {
	if err := e.direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, 0, 0, err
	}
	ee := &v1alpha1.ExecutionEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ExecutionEnvironmentSpec{
			Image: "bench", PrewarmingPoolSize: int32(n), CPULimit: 50, MemoryLimit: 32, TemplateJob: nomaddev.SleepTemplateHCL,
		},
	}
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
	if err := e.direct.Create(ctx, ee); err != nil {
		close(stop)
		wg.Wait()
		return 0, 0, 0, err
	}
	err := waitFilled(ctx, e, ns, name, n, 5*time.Minute)
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

// setPool scales the environment and waits for the pool to settle.
func setPool(ctx context.Context, e *env, ns, name string, n int) error {
	patch := fmt.Sprintf(`{"spec":{"prewarmingPoolSize":%d}}`, n)
	ee := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := e.direct.Patch(ctx, ee, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		return err
	}
	if err := waitFilled(ctx, e, ns, name, n, 3*time.Minute); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // the surplus tasks die
	return nil
}

func deleteEnvironment(ctx context.Context, e *env, ns, name string) error {
	ee := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := e.direct.Delete(ctx, ee); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		list := &v1alpha1.RunnerList{}
		if err := e.direct.List(ctx, list, client.InNamespace(ns)); err != nil {
			return err
		}
		jobs, _, err := e.nomad.Jobs().PrefixList(name + "-")
		if err != nil {
			return err
		}
		// A deleted runner's job is stopped, and purged by the orphan
		// collector later (an hour here): only live jobs count.
		live := 0
		for _, j := range jobs {
			if j.Status != "dead" {
				live++
			}
		}
		if len(list.Items) == 0 && live == 0 {
			time.Sleep(2 * time.Second) // tasks die after the stop
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("environment %s/%s not gone: %d runners, %d live jobs", ns, name, len(list.Items), live)
		}
		time.Sleep(200 * time.Millisecond)
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
func barePatches(ctx context.Context, e *env, ns, name string, c, m int, raw *rawJobs) (sample, error) {
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
			return sample{}, errors.Join(err, raw.remove(ctx))
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
			err = raw.waitRunning(ctx, start)
		}
		err = errors.Join(err, raw.remove(ctx))
	}
	return sample{lat: lat, wall: wall}, err
}

// claims takes m runners with claim.Claim over c workers, each claimer reading
// idle runners from an informer cache as a long-running claimer service would.
func claims(ctx context.Context, e *env, ns, name string, c, m int) (sample, []*v1alpha1.Runner, error) {
	lat := make([]time.Duration, m)
	got := make([]*v1alpha1.Runner, m)
	var mu sync.Mutex
	conflicts := 0
	start := time.Now()
	err := parallel(c, m, func(i int) error {
		st := &claim.Stats{}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t0 := time.Now()
		rn, err := claim.Claim(cctx, e.cached, ns, name, claim.Options{Holder: fmt.Sprintf("bench-%d", i), Wait: true, RetryInterval: 20 * time.Millisecond, Stats: st})
		lat[i] = time.Since(t0)
		got[i] = rn
		mu.Lock()
		conflicts += st.Conflicts
		mu.Unlock()
		return err
	})
	return sample{lat: lat, wall: time.Since(start), conflicts: conflicts}, got, err
}

func release(ctx context.Context, e *env, runners []*v1alpha1.Runner) error {
	if err := parallel(8, len(runners), func(i int) error {
		return claim.Release(ctx, e.direct, runners[i], runners[i].Status.Claim.Token)
	}); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, rn := range runners {
		for {
			err := e.direct.Get(ctx, client.ObjectKeyFromObject(rn), &v1alpha1.Runner{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("released runner %s not gone", rn.Name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
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
// has reconnected and reconciled every runner again.
func resync(ctx context.Context, e *env, n int) (resyncResult, error) {
	time.Sleep(2 * time.Second) // quiet
	before := e.counter.Snapshot()
	reconciles := e.runnerReconciles()
	opened := before["GET /v1/event/stream"]
	list := &v1alpha1.RunnerList{}
	if err := e.direct.List(ctx, list); err != nil {
		return resyncResult{}, err
	}
	e.counter.CutStreams()
	deadline := time.Now().Add(time.Minute)
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

func memoryBench(ctx context.Context, e *env, r *results, objects int, logf func(string, ...any)) error {
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
	deadline := time.Now().Add(3 * time.Minute)
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
