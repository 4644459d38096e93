// Package bench measures the operator against its physical limits (a bare API
// write, raw Nomad) on a real control plane and a real Nomad dev agent, and
// writes docs/BENCHMARKS.md and docs/benchmarks.json. It runs only with
// NRO_BENCH=1 (make bench), never in make test: figures are reported, never
// asserted.
//
// A run must finish, and tell the truth, on a slow machine as on a fast one:
// every wait is bounded by what this machine measured earlier in the same run
// (see pace), a repetition that fails is recorded with its reason and the run
// goes on, and the report is always written before the test fails.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}

// reportMargin is the time kept, before go test's -timeout, to stop what runs
// and write the report.
const reportMargin = 5 * time.Minute

// singles is how many runners are released one at a time, each awaited, per
// repetition of the release of 1.
const singles = 3

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
		WaitFactor: envFloat("BENCH_WAIT_FACTOR", 5),
	}
	cfg.ClaimPool = min(cfg.ClaimPool, cfg.N)
	for c, m := range cfg.Claims { // small smoke runs (BENCH_N=20)
		cfg.Claims[c] = min(m, cfg.ClaimPool/2)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := time.Now()
	b := &bench{t: t, ctx: ctx, started: started, pace: newPace(cfg.WaitFactor), deadline: started.Add(24 * time.Hour)}
	if d, ok := t.Deadline(); ok {
		b.deadline = d.Add(-reportMargin)
	}
	// The previous run's headline is read before this run overwrites its file.
	b.r = &results{Config: cfg, Started: started.UTC().Format(time.RFC3339), Incomplete: true,
		Waits: b.pace, Previous: loadPrevious(root, cfg), root: root}

	e, err := startEnv(ctx, t, root)
	if err != nil {
		b.r.fail("setup", 0, err.Error(), time.Since(started), nil)
		b.finish()
		return
	}
	b.e = e
	b.r.Machine = machine(e)

	// Every section runs in each topology: all processes sharing the CPUs
	// alike, and the control plane served first, as on machines of its own in
	// production (see deprioritiseNomad). Each has its own anchors.
	defer func() { _ = deprioritiseNomad(false) }()
	tps := cfg.topologies()
	for i, tp := range tps {
		if err := deprioritiseNomad(tp.niced); err != nil {
			b.r.fail("topology"+tp.suffix, 0, err.Error(), 0, nil)
			continue
		}
		b.rawAnchors(tp)
		b.checkpoint()
		b.coldFills(tp)
		b.checkpoint()
		b.claimSection(tp, i == len(tps)-1)
		b.checkpoint()
	}
	_ = deprioritiseNomad(false) // needs CAP_SYS_NICE; the sections below barely use Nomad

	// Nomad calls: per runner lifetime over the whole run, then one forced
	// event-stream reconnect (a resync of every runner).
	lifetime(b.r, e)
	for rep := range cfg.Reps {
		b.step("resync", rep, func() error {
			rs, err := resync(ctx, e, b.within(b.pace.startBudget(cfg.ClaimPool)))
			if err != nil {
				return err
			}
			b.r.add("resync_per_runner_reads", rs.perRunnerReads)
			b.r.add("resync_list_calls", rs.lists)
			b.r.ResyncCalls = rs.calls
			b.logf("resync %d: %.0f list calls, %.3f reads per runner; calls %v", rep, rs.lists, rs.perRunnerReads, rs.calls)
			return nil
		})
	}
	b.checkpoint()

	// Operator memory with many Runner objects.
	b.step("memory", 0, func() error {
		return memoryBench(ctx, e, b.r, cfg.Objects, b.within(b.pace.startBudget(cfg.N)), b.logf)
	})
	b.finish()
}

// bench is one run: its world, its results, and the pace its waits keep.
type bench struct {
	t        *testing.T
	ctx      context.Context
	e        *env
	r        *results
	pace     *pace
	started  time.Time
	deadline time.Time // no section starts after it: the report must be written

	section string // the repetition running, for what it notes
	rep     int
}

func (b *bench) logf(format string, args ...any) {
	b.t.Logf("%6.1fs "+format, append([]any{time.Since(b.started).Seconds()}, args...)...)
}

// within caps a wait's budget by the time the run has left.
func (b *bench) within(d time.Duration) time.Duration {
	return max(0, min(d, time.Until(b.deadline)))
}

// checkpoint writes what is measured so far, so a run cut short (killed, or
// over go test's timeout) still leaves its figures, marked incomplete.
func (b *bench) checkpoint() {
	b.r.Duration = time.Since(b.started).Round(time.Second).String() + " (so far)"
	if err := b.r.write(b.r.root); err != nil {
		b.t.Error(err)
	}
}

// finish writes the report, then fails the test if any repetition failed:
// make bench exits non-zero only after the report is written.
func (b *bench) finish() {
	b.r.Incomplete = false
	b.r.Duration = time.Since(b.started).Round(time.Second).String()
	if err := b.r.write(b.r.root); err != nil {
		b.t.Error(err)
	}
	b.logf("wrote docs/BENCHMARKS.md and docs/benchmarks.json")
	if len(b.r.Failures) > 0 {
		var lines []string
		for _, f := range b.r.Failures {
			lines = append(lines, fmt.Sprintf("- %s, repetition %d: %s", f.Section, f.Rep, f.Reason))
		}
		b.t.Errorf("%d repetitions failed (the report has them):\n%s", len(b.r.Failures), strings.Join(lines, "\n"))
	}
}

// step runs one repetition of a section. An error fails that repetition only:
// it is recorded with its reason and the figures it had measured, and the run
// goes on.
func (b *bench) step(section string, rep int, f func() error) bool {
	if time.Until(b.deadline) <= 0 {
		b.r.fail(section, rep, "not run: the run's time was up (go test -timeout, BENCH_TIMEOUT)", 0, nil)
		return false
	}
	before := b.r.counts()
	start := time.Now()
	b.section, b.rep = section, rep
	err := f()
	if err == nil {
		return true
	}
	b.r.fail(section, rep, err.Error(), time.Since(start), b.r.addedSince(before))
	b.logf("FAILED %s, repetition %d, after %.1fs: %v", section, rep, time.Since(start).Seconds(), err)
	return false
}

// drain makes a repetition start on a drained node: no process of any Nomad
// allocation runs but those of keep (allocation IDs), so what the previous
// repetition stopped or purged takes no CPU any more. It waits as long as
// releasing that many runners may take; what is left then is killed, and
// reported as a failure.
func (b *bench) drain(before string, rep int, keep map[string]bool) {
	left := b.e.procs.leftovers(keep)
	if len(left) == 0 {
		return
	}
	start := time.Now()
	budget := b.within(b.pace.releaseBudget(len(left)))
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(procPoll):
		}
		now := b.e.procs.leftovers(keep)
		if len(now) == 0 {
			b.logf("drained %d leftover allocations in %.1fs before %s", len(left), time.Since(start).Seconds(), before)
			return
		}
		if time.Since(start) > budget {
			killed := b.e.procs.kill(now)
			b.r.fail("drain before "+before, rep, fmt.Sprintf("processes of %d allocations (%s) still ran %.0fs after the previous repetition (budget %.0fs): killed %d processes",
				len(now), describe(now), time.Since(start).Seconds(), budget.Seconds(), killed), time.Since(start), nil)
			return
		}
	}
}

// --- raw Nomad anchors -------------------------------------------------------

func (b *bench) rawAnchors(tp topology) {
	cfg := b.r.Config
	for _, k := range cfg.rawSizes() {
		for rep := range cfg.Reps {
			b.step(fmt.Sprintf("raw Nomad %d%s", k, tp.suffix), rep, func() error {
				b.drain(fmt.Sprintf("raw Nomad %d%s", k, tp.suffix), rep, nil)
				times := 1
				if k == 1 {
					times = singles
				}
				for i := range times {
					r0 := b.e.read(b.ctx)
					d, rel, err := b.rawNomad(k, fmt.Sprintf("raw%d-%d-%d", k, rep, i), func() {
						if k > 1 {
							b.e.cost(b.ctx, b.r, fmt.Sprintf("raw_nomad_%d%s", k, tp.suffix), r0, k)
						}
					})
					if d > 0 {
						b.r.add(fmt.Sprintf("raw_nomad_register_to_running_%d_s%s", k, tp.suffix), d.Seconds())
					}
					b.record("raw_nomad", k, tp.suffix, rel)
					if err != nil {
						return err
					}
					s := durSample(rel.durs)
					b.logf("raw Nomad %d jobs%s: register→running %.2fs; stop→task gone p50 %.2fs p99 %.2fs", k, tp.suffix, d.Seconds(), s.p(50)/1000, s.p(99)/1000)
				}
				return nil
			})
		}
	}
}

// rawNomad registers k jobs (8 callers) and waits until all run; running is
// called then. The jobs are then released as raw Nomad releases them (see
// removeRaw), whatever happened before. It returns the register→running time
// (0 when they did not all run) and the release times.
func (b *bench) rawNomad(k int, prefix string, running func()) (time.Duration, released, error) {
	jobs := newRawJobs(b.e, prefix, k)
	start := time.Now()
	budget := b.within(b.pace.startBudget(k))
	err := parallel(8, k, func(i int) error { return jobs.register(b.ctx, i) })
	if err == nil {
		err = jobs.waitRunning(b.ctx, start, budget)
	}
	d := time.Since(start)
	// A start that gave up took at least that long: later waits scale with it.
	b.pace.observeStart(k, d)
	if err != nil {
		_, rerr := b.removeRaw(jobs)
		return 0, released{}, errors.Join(err, rerr)
	}
	running()
	rel, err := b.removeRaw(jobs)
	return d, rel, err
}

// removeRaw releases raw jobs as raw Nomad can: it stops every job (8
// callers, each call's time noted), waits until each allocation's task
// process is gone from the node, then purges them. It returns, per
// allocation, the time from its job's stop call to its task process gone
// (see timeRelease).
func (b *bench) removeRaw(j *rawJobs) (released, error) {
	allocs, _, err := j.api.Allocations().List(j.query(b.ctx))
	if err != nil {
		return released{}, errors.Join(err, j.purge(b.ctx))
	}
	jobOf := map[string]string{}
	ids := make([]string, 0, len(allocs))
	for _, a := range allocs {
		jobOf[a.ID] = a.JobID
		ids = append(ids, a.ID)
	}
	have, _ := b.e.procs.withTasks(ids)
	var mu sync.Mutex
	stopped := map[string]time.Time{}
	stopErr := parallel(8, len(j.ids), func(i int) error {
		mu.Lock()
		stopped[j.ids[i]] = time.Now()
		mu.Unlock()
		_, _, err := j.api.Jobs().Deregister(j.ids[i], false, j.write(b.ctx))
		return err
	})
	rel := b.timeRelease(have, func(a string) time.Time { return stopped[jobOf[a]] }, len(j.ids), "raw Nomad jobs stopped")
	errs := []error{stopErr, rel.err}
	if len(rel.durs) > 0 { // a task that outlived the budget counts with its lower bound
		b.pace.observeRelease(len(j.ids), maxDuration(rel.durs))
	}
	errs = append(errs, j.purge(b.ctx))
	return rel, errors.Join(errs...)
}

// --- cold fill -----------------------------------------------------------------

// coldFills fills a new environment 0 → N per repetition, then releases it
// (deletes the environment) and times each runner to its task process gone.
func (b *bench) coldFills(tp topology) {
	cfg := b.r.Config
	for rep := range cfg.Reps {
		section := "cold fill" + tp.suffix
		b.step(section, rep, func() error {
			b.drain(section, rep, nil)
			ns := fmt.Sprintf("bench-cold%s-%d", dashed(tp.suffix), rep)
			name := fmt.Sprintf("cold%d%s", rep, dashed(tp.suffix))
			r0 := b.e.read(b.ctx)
			profiled := b.e.profile(fmt.Sprintf("cold-fill%s-%d", tp.suffix, rep), 20*time.Second)
			budget := b.within(b.pace.startBudget(cfg.N))
			d, peak, peakJobs, err := coldFill(b.ctx, b.e, ns, name, cfg.N, budget)
			profiled()
			if err == nil {
				b.e.cost(b.ctx, b.r, "cold_fill"+tp.suffix, r0, cfg.N)
				b.r.add("cold_fill_s"+tp.suffix, d.Seconds())
				b.r.add("cold_fill_peak_live_runners"+tp.suffix, float64(peak))
				b.r.add("cold_fill_peak_nomad_jobs"+tp.suffix, float64(peakJobs))
				b.logf("cold fill %d%s: %.2fs, peak %d runners, %d Nomad jobs", cfg.N, tp.suffix, d.Seconds(), peak, peakJobs)
			} else {
				err = fmt.Errorf("%w (budget %.0fs = k × raw Nomad of %d)", err, budget.Seconds(), cfg.N)
				b.logf("operator log tail:\n%s", tail(b.e.opLog))
			}
			rel, n, rerr := b.releaseEnvironment(ns, name)
			if err == nil && n == cfg.N {
				b.record("operator", cfg.N, tp.suffix, rel)
				s := durSample(rel.durs)
				b.logf("release of %d (environment deleted)%s: task gone p50 %.2fs p99 %.2fs", n, tp.suffix, s.p(50)/1000, s.p(99)/1000)
			}
			return errors.Join(err, rerr)
		})
	}
}

// releaseEnvironment deletes an environment, whose finalizer releases every
// runner, and times each runner from that call to its task process gone; then
// it waits until the runners and their Nomad jobs are gone from the APIs too.
// It returns the times and how many runners with a running task there were.
func (b *bench) releaseEnvironment(ns, name string) (released, int, error) {
	list := &v1alpha1.RunnerList{}
	if err := b.e.direct.List(b.ctx, list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.EnvironmentLabel: name}); err != nil {
		return released{}, 0, err
	}
	var allocs []string
	for _, rn := range list.Items {
		if rn.Status.AllocationID != "" {
			allocs = append(allocs, rn.Status.AllocationID)
		}
	}
	have, _ := b.e.procs.withTasks(allocs)
	ee := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	// Claimed runners would keep the environment Terminating until released: end them.
	if err := b.e.direct.Patch(b.ctx, ee, fixtures.EndClaimsPatch()); err != nil && !apierrors.IsNotFound(err) {
		return released{}, 0, err
	}
	t0 := time.Now()
	if err := b.e.direct.Delete(b.ctx, ee); err != nil {
		if apierrors.IsNotFound(err) {
			return released{}, 0, nil
		}
		return released{}, 0, err
	}
	rel := b.timeRelease(have, func(string) time.Time { return t0 }, max(len(list.Items), 1), "runners released by deleting their environment")
	errs := []error{rel.err}
	errs = append(errs, b.waitEnvironmentGone(ns, name, b.within(b.pace.releaseBudget(max(len(list.Items), 1)))))
	return rel, len(have), errors.Join(errs...)
}

func (b *bench) waitEnvironmentGone(ns, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		list := &v1alpha1.RunnerList{}
		if err := b.e.direct.List(b.ctx, list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.EnvironmentLabel: name}); err != nil {
			return err
		}
		jobs, _, err := b.e.nomad.Jobs().PrefixList(name + "-")
		if err != nil {
			return err
		}
		// A deleted runner's job is stopped, and purged by the orphan collector
		// later (an hour here): only live jobs count.
		live := 0
		for _, j := range jobs {
			if j.Status != "dead" {
				live++
			}
		}
		err = b.e.direct.Get(b.ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha1.ExecutionEnvironment{})
		if len(list.Items) == 0 && live == 0 && apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("environment %s/%s not gone after %.0fs: %d runners, %d live Nomad jobs", ns, name, timeout.Seconds(), len(list.Items), live)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- claims --------------------------------------------------------------------

// claimSection fills a pool of ClaimPool and runs the claims against it. The
// pool of the last topology is kept for the resync and memory sections.
func (b *bench) claimSection(tp topology, last bool) {
	cfg := b.r.Config
	ns, name := "bench-claims"+dashed(tp.suffix), "claims"+dashed(tp.suffix)
	filled := b.step("claim pool fill"+tp.suffix, 0, func() error {
		b.drain("claim pool fill"+tp.suffix, 0, nil)
		if err := createEnvironment(b.ctx, b.e, ns, name, cfg.ClaimPool); err != nil {
			return err
		}
		budget := b.within(b.pace.startBudget(cfg.ClaimPool))
		if err := waitFilled(b.ctx, b.e, ns, name, cfg.ClaimPool, budget); err != nil {
			return fmt.Errorf("%w (budget %.0fs = k × raw Nomad)", err, budget.Seconds())
		}
		return nil
	})
	if filled {
		for _, c := range cfg.Claimers {
			for rep := range cfg.Reps {
				for _, paused := range []bool{false, true} {
					if paused && tp.niced {
						continue
					}
					section := fmt.Sprintf("claims c=%d%s", c, tp.suffix)
					if paused {
						section = fmt.Sprintf("claims c=%d_operator_paused", c)
					}
					b.step(section, rep, func() error { return b.claimRep(ns, name, c, rep, paused, tp) })
				}
			}
		}
	}
	if !last || !filled {
		b.step("claim pool release"+tp.suffix, 0, func() error {
			_, _, err := b.releaseEnvironment(ns, name)
			return err
		})
	}
}

// claimRep is one repetition of the claims at c: the bare PATCH anchors next
// to the claims, the refill after the drain, and the release of the claimed
// runners, each timed to its task process gone.
func (b *bench) claimRep(ns, name string, c, rep int, paused bool, tp topology) error {
	cfg := b.r.Config
	ctx, e := b.ctx, b.e
	m := cfg.Claims[c]
	suffix := tp.suffix
	if paused {
		suffix = "_operator_paused"
	}
	defer e.resume() // never leave the operator stopped
	if err := waitFilled(ctx, e, ns, name, cfg.ClaimPool, b.within(b.pace.startBudget(cfg.ClaimPool))); err != nil {
		return err
	}
	keep, err := b.poolAllocs(name)
	if err != nil {
		return err
	}
	b.drain(fmt.Sprintf("claims c=%d%s", c, suffix), rep, keep)
	if paused {
		e.pause()
	}
	bare, err := b.barePatches(ns, name, c, m, nil)
	if err != nil {
		return err
	}
	if !paused {
		// The same patches, each starting the Nomad job a claim's refill starts.
		beside, err := b.barePatches(ns, name, c, m, newRawJobs(e, fmt.Sprintf("rawpatch%d", c), m))
		if err != nil {
			return err
		}
		b.r.add(fmt.Sprintf("bare_patch_beside_nomad_p99_ms_c%d%s", c, suffix), beside.p(99))
		b.r.add(fmt.Sprintf("bare_patch_beside_nomad_per_s_c%d%s", c, suffix), beside.rate())
		b.logf("c=%d m=%d%s: bare beside Nomad p50 %.1fms p99 %.1fms %.0f/s", c, m, suffix, beside.p(50), beside.p(99), beside.rate())
	}
	var r0 reading
	profiled := func() {}
	if !paused { // a paused operator answers no scrape
		r0 = e.read(ctx)
		profiled = e.profile(fmt.Sprintf("claims-c%d%s", c, suffix), 5*time.Second)
	}
	cl, claimed, err := claims(ctx, e, ns, name, c, m, b.pace.scaled(b.pace.Start[1]))
	drained := time.Now()
	e.resume()
	if err != nil {
		profiled()
		return errors.Join(err, b.releaseClaimed(claimed, c, tp))
	}
	b.r.add(fmt.Sprintf("bare_patch_p50_ms_c%d%s", c, suffix), bare.p(50))
	b.r.add(fmt.Sprintf("bare_patch_p99_ms_c%d%s", c, suffix), bare.p(99))
	b.r.add(fmt.Sprintf("bare_patch_per_s_c%d%s", c, suffix), bare.rate())
	b.r.add(fmt.Sprintf("claim_p50_ms_c%d%s", c, suffix), cl.p(50))
	b.r.add(fmt.Sprintf("claim_p99_ms_c%d%s", c, suffix), cl.p(99))
	b.r.add(fmt.Sprintf("claim_per_s_c%d%s", c, suffix), cl.rate())
	b.r.add(fmt.Sprintf("claim_conflicts_per_claim_c%d%s", c, suffix), float64(cl.conflicts)/float64(len(cl.lat)))
	budget := b.within(b.pace.startBudget(m))
	if err := waitFilled(ctx, e, ns, name, cfg.ClaimPool, budget); err != nil {
		profiled()
		err = fmt.Errorf("refill: %w (budget %.0fs = k × raw Nomad of %d)", err, budget.Seconds(), m)
		return errors.Join(err, b.releaseClaimed(claimed, c, tp))
	}
	refill := time.Since(drained)
	profiled()
	if !paused {
		b.r.add(fmt.Sprintf("refill_%d_s_c%d%s", m, c, suffix), refill.Seconds())
		// What a claim and the refill it causes cost, per claim.
		e.cost(ctx, b.r, fmt.Sprintf("claim_refill_c%d%s", c, suffix), r0, m)
	}
	b.logf("c=%d m=%d%s: bare p50 %.1fms p99 %.1fms %.0f/s; claim p50 %.1fms p99 %.1fms %.0f/s, %.2f conflicts/claim; refill %.2fs",
		c, m, suffix, bare.p(50), bare.p(99), bare.rate(), cl.p(50), cl.p(99), cl.rate(), float64(cl.conflicts)/float64(len(cl.lat)), refill.Seconds())
	var errs []error
	if c == 32 && !paused {
		// The refill's anchor on the same node as the refill: the full pool
		// and the claimed runners running beside it (their executors and
		// logmon processes cost CPU too).
		d, _, err := b.rawNomad(m, fmt.Sprintf("rawpool%d", m), func() {})
		if err != nil {
			errs = append(errs, fmt.Errorf("raw Nomad beside the pool: %w", err))
		} else {
			b.r.add(fmt.Sprintf("raw_nomad_register_to_running_%d_s_beside_pool%s", m, tp.suffix), d.Seconds())
			b.logf("raw Nomad %d jobs register→running beside the pool%s: %.2fs", m, tp.suffix, d.Seconds())
		}
	}
	errs = append(errs, b.releaseClaimed(claimed, c, tp))
	return errors.Join(errs...)
}

// poolAllocs are the allocations of an environment's runner jobs that Nomad
// still wants running: the processes a drain keeps. (A starting runner's
// status may not name its allocation yet; Nomad's list does, and a released
// runner's job, stopped or purged, is not in it.)
func (b *bench) poolAllocs(name string) (map[string]bool, error) {
	q := (&nomad.QueryOptions{Filter: fmt.Sprintf(`JobID matches "^%s-"`, name)}).WithContext(b.ctx)
	allocs, _, err := b.e.nomad.Allocations().List(q)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, a := range allocs {
		if a.DesiredStatus == nomad.AllocDesiredStatusRun {
			keep[a.ID] = true
		}
	}
	return keep, nil
}

// releaseClaimed releases claimed runners as their holders do (claim.Release
// deletes the Runner) and times each from its release call to its task
// process gone. At c=1 the first few go one at a time, each awaited: the
// release of 1 runner; the others go together (8 callers): the release of m.
func (b *bench) releaseClaimed(claimed []*v1alpha1.Runner, c int, tp topology) error {
	var runners []*v1alpha1.Runner
	for _, rn := range claimed {
		if rn != nil {
			runners = append(runners, rn)
		}
	}
	if len(runners) == 0 {
		return nil
	}
	var errs []error
	if c == 1 {
		n := min(singles, len(runners))
		for _, rn := range runners[:n] {
			rel, err := b.releaseRunners([]*v1alpha1.Runner{rn})
			b.record("operator", 1, tp.suffix, rel)
			errs = append(errs, err)
		}
		runners = runners[n:]
	}
	if len(runners) == 0 {
		return errors.Join(errs...)
	}
	rel, err := b.releaseRunners(runners)
	if c != 1 {
		b.record("operator", len(runners), tp.suffix, rel)
		s := durSample(rel.durs)
		b.logf("release of %d claimed%s: task gone p50 %.2fs p99 %.2fs", len(runners), tp.suffix, s.p(50)/1000, s.p(99)/1000)
	}
	return errors.Join(append(errs, err)...)
}

// releaseRunners releases runners together (8 callers), times each from its
// release call to its task process gone, and waits until their Runner
// objects are gone too.
func (b *bench) releaseRunners(runners []*v1alpha1.Runner) (released, error) {
	allocs := make([]string, 0, len(runners))
	for _, rn := range runners {
		if rn.Status.AllocationID != "" {
			allocs = append(allocs, rn.Status.AllocationID)
		}
	}
	have, _ := b.e.procs.withTasks(allocs)
	var mu sync.Mutex
	released := map[string]time.Time{}
	relErr := parallel(8, len(runners), func(i int) error {
		mu.Lock()
		released[runners[i].Status.AllocationID] = time.Now()
		mu.Unlock()
		return claim.Release(b.ctx, b.e.claimer, runners[i], runners[i].Status.Claim.Token)
	})
	rel := b.timeRelease(have, func(a string) time.Time { return released[a] }, len(runners), "claimed runners released")
	errs := []error{relErr, rel.err}
	deadline := time.Now().Add(b.within(b.pace.releaseBudget(len(runners))))
	for _, rn := range runners {
		for {
			err := b.e.direct.Get(b.ctx, client.ObjectKeyFromObject(rn), &v1alpha1.Runner{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("released runner %s not gone", rn.Name))
				return rel, errors.Join(errs...)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return rel, errors.Join(errs...)
}

// released is a release timed on the node: each runner's time from its
// release call to its task process gone, and how many tasks still ran when
// the budget was out. Those were killed (and noted in the report); their
// times are how long they had run after release, lower bounds, and are among
// durs.
type released struct {
	durs []time.Duration
	left int
	err  error
}

// timeRelease waits until the task process of each allocation in have is
// gone, at most k times raw Nomad's stop of as many (n) from the last
// release call, and times each from its release call (t0).
func (b *bench) timeRelease(have []string, t0 func(alloc string) time.Time, n int, what string) released {
	var last time.Time
	for _, a := range have {
		if t := t0(a); t.After(last) {
			last = t
		}
	}
	budget := b.within(b.pace.releaseBudget(n))
	gone, left, err := b.e.procs.waitTasksGone(b.ctx, have, last.Add(budget))
	rel := released{err: err, left: len(left)}
	for a, t := range gone {
		rel.durs = append(rel.durs, t.Sub(t0(a)))
	}
	if len(left) > 0 {
		now := time.Now()
		for _, a := range left {
			rel.durs = append(rel.durs, now.Sub(t0(a)))
		}
		why := b.nomadView(left)
		killed := b.e.procs.kill(left)
		// A measured result, not a failed repetition: the release took longer
		// than k times raw Nomad's (see the release target).
		note := fmt.Sprintf("%d of %d %s: task still running %.0fs after the last release call (budget: k × raw Nomad's stop of %d); in Nomad's API: %s; the bench killed %d processes",
			len(left), len(have), what, budget.Seconds(), n, why, killed)
		b.r.Outlived = append(b.r.Outlived, failure{Section: b.section, Rep: b.rep, Reason: note, AfterS: now.Sub(last).Seconds()})
		b.logf("%s", note)
	}
	return rel
}

// nomadView says what Nomad's API shows of allocations whose task outlived
// its release: gone (purged) or their desired and client status.
func (b *bench) nomadView(allocs []string) string {
	count := map[string]int{}
	for _, a := range allocs {
		info, _, err := b.e.nomad.Allocations().Info(a, (&nomad.QueryOptions{}).WithContext(b.ctx))
		switch {
		case err != nil && strings.Contains(err.Error(), "404"):
			count["gone (purged)"]++
		case err != nil:
			count["unreadable"]++
		default:
			count[fmt.Sprintf("desired %s, client %s", info.DesiredStatus, info.ClientStatus)]++
		}
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
	}
	return strings.Join(parts, ", ")
}

// record adds a timed release of size k to the run's figures: the times to
// <who>_release_to_gone_<k>_s, the tasks that outlived the budget to
// <who>_release_still_running_<k>.
func (b *bench) record(who string, k int, suffix string, rel released) {
	b.addSamples(fmt.Sprintf("%s_release_to_gone_%d_s%s", who, k, suffix), rel.durs)
	if rel.left > 0 {
		b.r.add(fmt.Sprintf("%s_release_still_running_%d%s", who, k, suffix), float64(rel.left))
	}
}

// --- figures -------------------------------------------------------------------

// addSamples records durations, in seconds, as values of one figure: the
// release figures pool every runner of every repetition, so their median and
// p99 are over runners.
func (b *bench) addSamples(name string, durs []time.Duration) {
	for _, d := range durs {
		b.r.add(name, d.Seconds())
	}
}

func durSample(durs []time.Duration) sample { return sample{lat: durs} }

func maxDuration(durs []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range durs {
		m = max(m, d)
	}
	return m
}

func dashed(suffix string) string { return strings.ReplaceAll(suffix, "_", "-") }

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

// rawSizes are the raw Nomad anchors' sizes: one runner, the claims of the
// refill target, the cold fill.
func (c config) rawSizes() []int {
	seen := map[int]bool{}
	var out []int
	for _, k := range []int{1, c.Claims[32], c.N} {
		if k > 0 && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Ints(out)
	return out
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
	// WaitFactor is k: every wait may take k times what raw Nomad took for
	// the same work in this run (BENCH_WAIT_FACTOR).
	WaitFactor float64 `json:"waitFactor"`
}

func createEnvironment(ctx context.Context, e *env, ns, name string, n int) error {
	if err := e.direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return e.direct.Create(ctx, fixtures.Environment(ns, name, int32(n)))
}
