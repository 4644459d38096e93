package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

type figure struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values,omitempty"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
	// P99 is the nearest-rank 99th percentile: for the release figures,
	// whose values are every runner's time, the slowest runners'.
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

// failure is a repetition that failed: why, after how long, and what it had
// measured by then (those figures are in the tables too).
type failure struct {
	Section string   `json:"section"`
	Rep     int      `json:"repetition"`
	Reason  string   `json:"reason"`
	AfterS  float64  `json:"afterSeconds"`
	Partial []string `json:"partialFigures,omitempty"`
}

// previousRun is what a report keeps of the run before it, to compare: its
// targets and summaries of its machine-speed and release figures.
type previousRun struct {
	Started  string   `json:"started"`
	Duration string   `json:"duration"`
	Config   config   `json:"config"`
	Figures  []figure `json:"figures"`
	Targets  []target `json:"targets"`
}

type target struct {
	What    string  `json:"what"`
	Figure  string  `json:"figure"`
	Anchor  string  `json:"anchor,omitempty"`
	Ratio   float64 `json:"ratio,omitempty"`
	Value   float64 `json:"value"`
	Limit   float64 `json:"limit"`
	Met     bool    `json:"met"`
	Comment string  `json:"comment,omitempty"`
}

type results struct {
	// Incomplete marks a report written at a checkpoint of a run that has not
	// finished (or was killed): the next run compares with the one before it.
	Incomplete  bool                `json:"incomplete,omitempty"`
	Config      config              `json:"config"`
	Machine     map[string]string   `json:"machine"`
	Command     string              `json:"command"`
	Started     string              `json:"started"`
	Duration    string              `json:"duration"`
	Figures     []figure            `json:"figures"`
	Targets     []target            `json:"targets"`
	Lifetimes   int                 `json:"runnerLifetimesCounted"`
	TotalCalls  []nomaddev.KeyCount `json:"operatorNomadCallsWholeRun"`
	ResyncCalls []nomaddev.KeyCount `json:"operatorNomadCallsOneResync"`
	Note        string              `json:"note,omitempty"`
	// Waits is how this run bounded its waits: k and the anchors measured.
	Waits    *pace     `json:"waits,omitempty"`
	Failures []failure `json:"failedRepetitions"`
	// Outlived are releases some of whose tasks still ran when their
	// budget was out: measured (as lower bounds), not failed.
	Outlived []failure    `json:"releasesOutlivingBudget,omitempty"`
	Previous *previousRun `json:"previousRun,omitempty"`
	root     string
}

func (r *results) fail(section string, rep int, reason string, after time.Duration, partial []string) {
	r.Failures = append(r.Failures, failure{Section: section, Rep: rep, Reason: reason, AfterS: after.Seconds(), Partial: partial})
}

// counts is how many values each figure has, to tell later what a
// repetition added (addedSince).
func (r *results) counts() map[string]int {
	out := map[string]int{}
	for _, f := range r.Figures {
		out[f.Name] = len(f.Values)
	}
	return out
}

func (r *results) addedSince(before map[string]int) []string {
	var out []string
	for _, f := range r.Figures {
		if n := len(f.Values) - before[f.Name]; n > 0 && !isCostFigure(f.Name) {
			if n == 1 {
				out = append(out, fmt.Sprintf("%s = %.3g", f.Name, f.Values[len(f.Values)-1]))
			} else {
				out = append(out, fmt.Sprintf("%s (%d values)", f.Name, n))
			}
		}
	}
	return out
}

// isHeadlineFigure tells the figures a report keeps of the previous run: the
// machine's speed (raw Nomad) and the release figures.
func isHeadlineFigure(name string) bool {
	return strings.HasPrefix(name, "raw_nomad_") || strings.HasPrefix(name, "operator_release_")
}

// headline is what the next run keeps of this one.
func (r *results) headline() *previousRun {
	r.summarise()
	p := &previousRun{Started: r.Started, Duration: r.Duration, Config: r.Config, Targets: r.Targets}
	for _, f := range r.Figures {
		if isHeadlineFigure(f.Name) {
			if len(f.Values) > 8 { // the release samples: their summary is enough
				f.Values = nil
			}
			p.Figures = append(p.Figures, f)
		}
	}
	return p
}

// loadPrevious finds the run to compare with in docs/benchmarks.json: the
// run the file holds, or the one that run kept as its own previous; the
// first of them that is complete and was measured with the same sizes (a
// smoke run with BENCH_N=50 in between does not hide the last full run), else
// the first complete one at all (the report then says the sizes differ).
func loadPrevious(root string, cfg config) *previousRun {
	b, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks.json"))
	if err != nil {
		return nil
	}
	r := &results{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil
	}
	var candidates []*previousRun
	if !r.Incomplete && (len(r.Targets) > 0 || len(r.Figures) > 0) {
		candidates = append(candidates, r.headline())
	}
	if r.Previous != nil {
		candidates = append(candidates, r.Previous)
	}
	for _, c := range candidates {
		if sameSizes(c.Config, cfg) {
			return c
		}
	}
	if len(candidates) > 0 {
		return candidates[0]
	}
	return nil
}

// sameSizes tells whether two runs measured the same work (k aside).
func sameSizes(a, b config) bool {
	a.WaitFactor, b.WaitFactor = 0, 0
	return reflect.DeepEqual(a, b)
}

func (p *previousRun) fig(name string) *figure {
	if p == nil {
		return nil
	}
	for i := range p.Figures {
		if p.Figures[i].Name == name {
			return &p.Figures[i]
		}
	}
	return nil
}

func (p *previousRun) target(what string) *target {
	if p == nil {
		return nil
	}
	for i := range p.Targets {
		if p.Targets[i].What == what {
			return &p.Targets[i]
		}
	}
	return nil
}

func (r *results) add(name string, v float64) {
	for i := range r.Figures {
		if r.Figures[i].Name == name {
			r.Figures[i].Values = append(r.Figures[i].Values, v)
			return
		}
	}
	r.Figures = append(r.Figures, figure{Name: name, Values: []float64{v}})
}

func (r *results) fig(name string) *figure {
	for i := range r.Figures {
		if r.Figures[i].Name == name {
			return &r.Figures[i]
		}
	}
	return nil
}

func (r *results) summarise() {
	for i := range r.Figures {
		f := &r.Figures[i]
		v := append([]float64(nil), f.Values...)
		if len(v) == 0 {
			continue
		}
		sort.Float64s(v)
		f.N = len(v)
		f.Min, f.Max = v[0], v[len(v)-1]
		f.P99 = v[max((99*len(v)+99)/100-1, 0)]
		if len(v)%2 == 1 {
			f.Median = v[len(v)/2]
		} else {
			f.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
	}
}

// ratio compares medians: figure / anchor ≤ limit (or ≥ limit when atLeast).
func (r *results) ratio(what, fig, anchor string, limit float64, atLeast bool) {
	f, a := r.fig(fig), r.fig(anchor)
	if f == nil || a == nil || a.Median == 0 {
		return
	}
	x := f.Median / a.Median
	met := x <= limit
	if atLeast {
		met = x >= limit
	}
	r.Targets = append(r.Targets, target{What: what, Figure: fig, Anchor: anchor, Ratio: x, Value: f.Median, Limit: limit, Met: met})
}

func (r *results) absolute(what, fig string, limit float64, useMax bool) {
	f := r.fig(fig)
	if f == nil {
		return
	}
	v := f.Median
	if useMax {
		v = f.Max
	}
	r.Targets = append(r.Targets, target{What: what, Figure: fig, Value: v, Limit: limit, Met: v <= limit})
}

func (r *results) evaluate() {
	r.Targets = nil // evaluated again at each checkpoint
	r.summarise()
	k := r.Config.Claims[32]
	for _, tp := range r.Config.topologies() {
		where := ""
		if tp.niced {
			where = ", Nomad niced"
		}
		for _, c := range r.Config.Claimers {
			r.ratio(fmt.Sprintf("claim p99 ≤ 1.5× bare PATCH p99, %d claimers%s", c, where),
				fmt.Sprintf("claim_p99_ms_c%d%s", c, tp.suffix), fmt.Sprintf("bare_patch_p99_ms_c%d%s", c, tp.suffix), 1.5, false)
		}
		r.ratio("claim throughput ≥ 0.7× bare PATCH throughput, 32 claimers"+where,
			"claim_per_s_c32"+tp.suffix, "bare_patch_per_s_c32"+tp.suffix, 0.7, true)
		// The same targets against the bare PATCH with the Nomad work a claim
		// causes (one job start per write) on the same CPUs: what is left is
		// the operator's own share (its API writes and CPU).
		for _, c := range r.Config.Claimers {
			r.ratio(fmt.Sprintf("claim p99 ≤ 1.5× bare PATCH p99 beside the Nomad job starts, %d claimers%s", c, where),
				fmt.Sprintf("claim_p99_ms_c%d%s", c, tp.suffix), fmt.Sprintf("bare_patch_beside_nomad_p99_ms_c%d%s", c, tp.suffix), 1.5, false)
		}
		r.ratio("claim throughput ≥ 0.7× bare PATCH beside the Nomad job starts, 32 claimers"+where,
			"claim_per_s_c32"+tp.suffix, "bare_patch_beside_nomad_per_s_c32"+tp.suffix, 0.7, true)
		r.ratio(fmt.Sprintf("refill of %d ≤ 1.2× raw Nomad register→running of %d beside the same pool%s", k, k, where),
			fmt.Sprintf("refill_%d_s_c32%s", k, tp.suffix), fmt.Sprintf("raw_nomad_register_to_running_%d_s_beside_pool%s", k, tp.suffix), 1.2, false)
		r.ratio(fmt.Sprintf("(diagnosis) refill of %d ≤ 1.2× raw Nomad of %d on an empty node%s", k, k, where),
			fmt.Sprintf("refill_%d_s_c32%s", k, tp.suffix), fmt.Sprintf("raw_nomad_register_to_running_%d_s%s", k, tp.suffix), 1.2, false)
		r.ratio(fmt.Sprintf("cold fill 0→%d ≤ 1.3× raw Nomad of %d%s", r.Config.N, r.Config.N, where),
			"cold_fill_s"+tp.suffix, fmt.Sprintf("raw_nomad_register_to_running_%d_s%s", r.Config.N, tp.suffix), 1.3, false)
		r.absolute(fmt.Sprintf("peak live runners during cold fill ≤ %d (max over repetitions)%s", r.Config.N, where),
			"cold_fill_peak_live_runners"+tp.suffix, float64(r.Config.N), true)
	}
	for _, c := range r.Config.Claimers {
		r.ratio(fmt.Sprintf("(diagnosis) claim p99 ≤ 1.5× bare PATCH p99, %d claimers, operator paused", c),
			fmt.Sprintf("claim_p99_ms_c%d_operator_paused", c), fmt.Sprintf("bare_patch_p99_ms_c%d_operator_paused", c), 1.5, false)
	}
	r.ratio("(diagnosis) claim throughput ≥ 0.7× bare PATCH, 32 claimers, operator paused", "claim_per_s_c32_operator_paused", "bare_patch_per_s_c32_operator_paused", 0.7, true)
	// A released runner's code must end: none may outlive k times raw
	// Nomad's stop of as many (the release and drain budget).
	for _, tp := range r.Config.topologies() {
		for _, k := range r.Config.rawSizes() {
			if r.fig(fmt.Sprintf("operator_release_to_gone_%d_s%s", k, tp.suffix)) == nil {
				continue
			}
			name := fmt.Sprintf("operator_release_still_running_%d%s", k, tp.suffix)
			n := 0.0
			if f := r.fig(name); f != nil {
				for _, v := range f.Values {
					n += v
				}
			}
			r.Targets = append(r.Targets, target{What: fmt.Sprintf("released runners whose task still runs after k × raw Nomad's stop = 0 (all repetitions), release of %d%s", k, strings.ReplaceAll(tp.suffix, "_", " ")),
				Figure: name, Value: n, Limit: 0, Met: n == 0})
		}
	}
	r.absolute("Nomad writes per runner lifetime ≤ 3 (max over runners)", "nomad_writes_per_runner_lifetime", 3, true)
	r.absolute("Nomad reads per runner per resync = 0 (beyond the lists)", "resync_per_runner_reads", 0, true)
	r.absolute(fmt.Sprintf("operator RSS ≤ 150 MiB with %d Runner objects", r.Config.Objects), fmt.Sprintf("memory_%d_objects_rss_mib", r.Config.Objects), 150, false)
}

func machine(e *env) map[string]string {
	m := map[string]string{"go": runtime.Version(), "goarch": runtime.GOOS + "/" + runtime.GOARCH}
	m["nproc"] = fmt.Sprint(runtime.NumCPU())
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m["memory"] = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	m["kube-apiserver"] = run(filepath.Join(e.cp.Env.BinaryAssetsDirectory, "kube-apiserver"), "--version")
	bin := os.Getenv("NOMAD_BIN")
	if bin == "" {
		bin = filepath.Join(e.root, "bin", "nomad")
	}
	m["nomad"] = run(bin, "version")
	m["etcd"] = run(filepath.Join(e.cp.Env.BinaryAssetsDirectory, "etcd"), "--version")
	return m
}

func (r *results) write(root string) error {
	r.root = root
	r.evaluate()
	r.Command = "make bench"
	if v := os.Getenv("BENCH_NOTE"); v != "" {
		r.Note = v
	}
	dir := filepath.Join(root, "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "benchmarks.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), []byte(r.markdown()), 0o644)
}

func (r *results) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Benchmarks")
	p("")
	p("Generated by `%s` (test/bench, `NRO_BENCH=1`) on %s in %s: a real kube-apiserver + etcd (envtest),", r.Command, r.Started, r.Duration)
	p("a real Nomad dev agent (raw_exec, sleeping tasks of cpu 50 / memory 32) and the operator built from")
	p("main.go and run as its own process, talking to Nomad through a counting HTTP proxy. Each figure")
	p("is over %d repetitions (min / median / max); ratios and targets compare medians.", r.Config.Reps)
	p("The machine-readable file is `docs/benchmarks.json`.")
	p("")
	switch {
	case r.Incomplete:
		p("**Status: incomplete.** This report was written at a checkpoint of a run that had not finished (or was killed); the figures so far are below.")
	case len(r.Failures) > 0:
		p("**Status: complete, %d failed repetitions** (see [Failed repetitions](#failed-repetitions); `make bench` exited non-zero).", len(r.Failures))
	default:
		p("**Status: complete**, no repetition failed.")
	}
	if r.Note != "" {
		p("")
		p("**Note:** %s", r.Note)
	}
	p("")
	p("## Machine")
	p("")
	keys := make([]string, 0, len(r.Machine))
	for k := range r.Machine {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p("- %s: %s", k, r.Machine[k])
	}
	p("")
	r.speedTable(p)
	r.releaseTable(p)
	r.waitsSection(p)
	r.failuresSection(p)
	p("## Targets")
	p("")
	prevWhen := "–"
	if r.Previous != nil {
		prevWhen = r.Previous.Started
	}
	p("The last column is the same target in the previous run (%s): its ratio (or value), and whether it was met.%s", prevWhen, r.sizesNote())
	p("")
	p("| target | figure (median) | anchor | ratio | limit | met | previous run |")
	p("| --- | --- | --- | --- | --- | --- | --- |")
	for _, t := range r.Targets {
		ratio, anchor := "", ""
		if t.Anchor != "" {
			ratio, anchor = fmt.Sprintf("%.2f", t.Ratio), t.Anchor
		}
		value := fmt.Sprintf("%.3g", t.Value)
		p("| %s | `%s` = %s | %s | %s | %g | %s | %s |", t.What, t.Figure, value, anchor, ratio, t.Limit, metWord(t.Met), previousTarget(r.Previous.target(t.What)))
	}
	p("")
	p("## Figures")
	p("")
	p("| figure | min | median | max | values |")
	p("| --- | --- | --- | --- | --- |")
	for _, f := range r.Figures {
		if isCostFigure(f.Name) {
			continue // in the cost tables below
		}
		vals := make([]string, 0, len(f.Values))
		if len(f.Values) <= 8 {
			for _, v := range f.Values {
				vals = append(vals, fmt.Sprintf("%.3g", v))
			}
		} else {
			vals = append(vals, fmt.Sprintf("%d samples, p99 %.3g", len(f.Values), f.P99))
		}
		p("| `%s` | %.3g | %.3g | %.3g | %s |", f.Name, f.Min, f.Median, f.Max, strings.Join(vals, ", "))
	}
	p("")
	p("Units: `_ms` milliseconds, `_s` seconds, `_per_s` per second, `_mib` MiB. `cN` = N concurrent claimers.")
	p("Claims read idle runners from an informer cache (as a claimer service would) and write one status JSON patch;")
	p("the bare PATCH is the same patch shape (a `test` of the phase plus one status field) on idle runners of the")
	p("same pool, without the claim. Refill is timed from the last claim of a drain until the pool reports")
	p("`PoolFilled=True` with all runners idle; raw Nomad is K jobs registered by 8 callers until all run, on an")
	p("empty node, and for the refill's anchor also beside the pool (after the refill, with the full pool and")
	p("the claimed runners still running: the node state the refill itself ran on).")
	if r.Config.NomadNiced {
		p("Figures suffixed `_nomad_niced` were measured with Nomad (agent, executors, logmon, tasks) at nice 19,")
		p("so the API server, etcd, the operator and the harness are served first, as on machines of their own:")
		p("in production the tasks start on Nomad's client nodes, not on the control plane. Nomad still gets every")
		p("CPU cycle they leave. Each such figure has its anchor (bare PATCH, raw Nomad) measured the same way.")
	}
	p("")
	r.costTables(p)
	p("## Nomad calls of the operator")
	p("")
	p("Over the whole run (%d runner lifetimes counted for the per-runner figures):", r.Lifetimes)
	p("")
	p("| call | count |")
	p("| --- | --- |")
	for _, kc := range r.TotalCalls {
		p("| `%s` | %d |", kc.Key, kc.Count)
	}
	p("")
	p("One resync (the event stream cut, reconnected, every runner reconciled again):")
	p("")
	p("| call | count |")
	p("| --- | --- |")
	for _, kc := range r.ResyncCalls {
		p("| `%s` | %d |", kc.Key, kc.Count)
	}
	// The reading of the figures is written by hand (it says what is ours and
	// what is the limit's) and kept across runs.
	if f, err := os.ReadFile(filepath.Join(r.root, "test", "bench", "findings.md")); err == nil {
		p("")
		b.Write(f)
	}
	return b.String()
}

const (
	cpuPrefix    = "cpu_ms_per_runner_"
	apiPrefix    = "operator_api_"
	writesPrefix = "apiserver_writes_per_runner_"
)

func isCostFigure(name string) bool {
	return strings.HasPrefix(name, cpuPrefix) || strings.HasPrefix(name, apiPrefix) || strings.HasPrefix(name, writesPrefix)
}

// costPhases are the phases whose cost is recorded, in the order of the run.
func (r *results) costPhases() (raw, operator []string) {
	for _, tp := range r.Config.topologies() {
		raw = append(raw, fmt.Sprintf("raw_nomad_%d%s", r.Config.Claims[32], tp.suffix), fmt.Sprintf("raw_nomad_%d%s", r.Config.N, tp.suffix))
		operator = append(operator, "cold_fill"+tp.suffix)
		for _, c := range r.Config.Claimers {
			operator = append(operator, fmt.Sprintf("claim_refill_c%d%s", c, tp.suffix))
		}
	}
	return raw, operator
}

// costTables shows where the CPU went and what the operator asked of the API
// server, per runner (per claim for the claim rows), medians over repetitions.
func (r *results) costTables(p func(string, ...any)) {
	median := func(name string) string {
		if f := r.fig(name); f != nil {
			return fmt.Sprintf("%.3g", f.Median)
		}
		return "–"
	}
	components := []string{"operator", "kube_apiserver", "etcd", "nomad", "harness", "other", "total"}
	p("## Where the CPU goes")
	p("")
	p("CPU milliseconds per runner (per claim for `claim_refill`: the claim and the refill it causes, until")
	p("the pool is filled again), by process tree, read from /proc; medians. `nomad` is the agent with")
	p("everything it starts (executors, logmon, the tasks); `harness` is the benchmark's own process.")
	p("")
	raw, operator := r.costPhases()
	table(p, append(raw, operator...), components, func(ph, c string) string { return median(cpuPrefix + ph + "_" + c) })
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "409"}
	p("The operator's requests to the API server per runner (per claim), by method, and how many of them")
	p("were refused with 409 Conflict (counted in their method's column too); medians:")
	p("")
	table(p, operator, methods, func(ph, m string) string { return median(apiPrefix + m + "_per_runner_" + ph) })
	// The API server's own count of writes by resource: every client's, so
	// the claim rows include the claims themselves (runners/status).
	var kinds []string
	seen := map[string]bool{}
	for _, f := range r.Figures {
		if rest, ok := strings.CutPrefix(f.Name, writesPrefix); ok {
			if _, k, ok := strings.Cut(rest, " "); ok && !seen[k] {
				seen[k] = true
				kinds = append(kinds, k)
			}
		}
	}
	if len(kinds) == 0 {
		return
	}
	sort.Strings(kinds)
	p("Write requests the API server received per runner (per claim), by verb and resource, from every")
	p("client (the claim rows include the claim patches themselves, in `PATCH runners/status`); medians:")
	p("")
	table(p, operator, kinds, func(ph, k string) string { return median(writesPrefix + ph + " " + k) })
}

// table prints one row per phase and one column per key, each cell cell(phase, key).
func table(p func(string, ...any), phases, keys []string, cell func(phase, key string) string) {
	p("| phase | %s |", strings.Join(keys, " | "))
	p("| --- |%s", strings.Repeat(" --- |", len(keys)))
	for _, ph := range phases {
		row := make([]string, 0, len(keys))
		for _, k := range keys {
			row = append(row, cell(ph, k))
		}
		p("| %s | %s |", ph, strings.Join(row, " | "))
	}
	p("")
}

// TestRenderReport writes docs/BENCHMARKS.md again from docs/benchmarks.json
// and the current findings.md, without measuring (make bench-report): the
// findings are written after a run, from its figures.
func TestRenderReport(t *testing.T) {
	if os.Getenv("NRO_BENCH_RENDER") == "" {
		t.Skip("renders with NRO_BENCH_RENDER=1 (make bench-report)")
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := &results{}
	if err := json.Unmarshal(b, r); err != nil {
		t.Fatalf("docs/benchmarks.json: %v", err)
	}
	if len(r.Figures) == 0 {
		t.Fatal("docs/benchmarks.json holds no figures")
	}
	if err := r.write(root); err != nil {
		t.Fatal(err)
	}
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

func previousTarget(t *target) string {
	if t == nil {
		return "–"
	}
	v := fmt.Sprintf("%.3g", t.Value)
	if t.Anchor != "" {
		v = fmt.Sprintf("%.2f", t.Ratio)
	}
	return v + ", " + strings.Trim(metWord(t.Met), "*")
}

// speedTable states the machine's speed in this run, raw Nomad without the
// operator, beside the previous run's: two runs compare through it.
func (r *results) speedTable(p func(string, ...any)) {
	p("## Machine speed (raw Nomad, this run and the previous one)")
	p("")
	p("Raw Nomad without the operator on this machine in this run: K sleeping jobs registered by 8 callers")
	p("until all run, then stopped (8 callers) until each task process is gone from the node (seen in")
	p("/proc), then purged. Every ratio below is against these, measured in the same run; compare two")
	p("runs by these first: a slower machine (or a busier hour of a shared one) moves them all.")
	p("")
	prev := "previous run"
	if r.Previous != nil {
		prev = "previous run (" + r.Previous.Started + ")"
	}
	if note := r.sizesNote(); note != "" {
		p("%s", strings.TrimSpace(note))
		p("")
	}
	p("| anchor | this run: median (min–max) | %s: median (min–max) |", prev)
	p("| --- | --- | --- |")
	for _, tp := range r.Config.topologies() {
		for _, k := range r.Config.rawSizes() {
			name := fmt.Sprintf("raw_nomad_register_to_running_%d_s%s", k, tp.suffix)
			p("| `%s` | %s | %s |", name, spread(r.fig(name)), spread(r.Previous.fig(name)))
		}
		for _, k := range r.Config.rawSizes() {
			name := fmt.Sprintf("raw_nomad_release_to_gone_%d_s%s", k, tp.suffix)
			p("| `%s` (p50 / p99 over jobs) | %s | %s |", name, percentiles(r.fig(name)), percentiles(r.Previous.fig(name)))
		}
	}
	p("")
}

func spread(f *figure) string {
	if f == nil || f.N == 0 && f.Median == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3g s (%.3g–%.3g)", f.Median, f.Min, f.Max)
}

func percentiles(f *figure) string {
	if f == nil || f.N == 0 && f.Median == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3g / %.3g s (%d)", f.Median, f.P99, f.N)
}

// releaseTable sets the operator's release beside raw Nomad's: from the
// release call to the runner's task process gone from the node.
func (r *results) releaseTable(p func(string, ...any)) {
	p("## Release → task processes gone")
	p("")
	p("From the release call to the runner's task process gone from the node (seen in /proc, polled every")
	p("%s), p50 / p99 over every runner of every repetition (runners timed). The operator: the release of 1 is", procPoll)
	p("a claimed runner deleted alone (claim.Release), %d per repetition of the c=1 claims; of %d the claimed", singles, r.Config.Claims[32])
	p("runners of the c=32 claims deleted together (8 callers); of %d the cold-filled environment deleted", r.Config.N)
	p("(its finalizer releases every runner; timed from that one call). Raw Nomad: its jobs stopped")
	p("(deregistered without purge, 8 callers), each timed from its own stop call. The last column is the")
	p("operator's figure in the previous run.")
	p("")
	p("| release of | operator p50 / p99 (runners) | raw Nomad stop p50 / p99 (jobs) | operator / raw, p99 | previous run, operator |")
	p("| --- | --- | --- | --- | --- |")
	for _, tp := range r.Config.topologies() {
		for _, k := range r.Config.rawSizes() {
			op := r.fig(fmt.Sprintf("operator_release_to_gone_%d_s%s", k, tp.suffix))
			raw := r.fig(fmt.Sprintf("raw_nomad_release_to_gone_%d_s%s", k, tp.suffix))
			ratio := "–"
			if op != nil && raw != nil && raw.P99 > 0 {
				ratio = fmt.Sprintf("%.2f", op.P99/raw.P99)
			}
			still := func(who string, f *figure, prev bool) string {
				name := fmt.Sprintf("%s_release_still_running_%d%s", who, k, tp.suffix)
				s := r.fig(name)
				if prev {
					s = r.Previous.fig(name)
				}
				return percentiles(f) + stillRunning(s)
			}
			prev := r.Previous.fig(fmt.Sprintf("operator_release_to_gone_%d_s%s", k, tp.suffix))
			p("| %d%s | %s | %s | %s | %s |", k, strings.ReplaceAll(tp.suffix, "_", " "),
				still("operator", op, false), still("raw_nomad", raw, false), ratio, still("operator", prev, true))
		}
	}
	p("")
	p("A runner whose task still ran when the wait's budget (see Waits) was out is counted as \"still running\":")
	p("its task was killed by the bench so the next repetition starts on a drained node, and its time (how long it")
	p("had run after release) is a lower bound among the samples: a p99 marked ≥ is at least that. Such a release")
	p("is a measured result (the release target below is missed), not a failed repetition.")
	p("")
	if len(r.Outlived) == 0 {
		return
	}
	p("Releases whose tasks outlived the budget:")
	p("")
	p("| section | repetition | what Nomad and the node showed |")
	p("| --- | --- | --- |")
	for _, o := range r.Outlived {
		p("| %s | %d | %s |", o.Section, o.Rep, cell(o.Reason))
	}
	p("")
}

// stillRunning notes the tasks that outlived the budget, from a figure whose
// values are counts per release.
func stillRunning(f *figure) string {
	if f == nil {
		return ""
	}
	n := 0.0
	for _, v := range f.Values {
		n += v
	}
	return fmt.Sprintf(", **%.0f still running at the budget (p99 ≥)**", n)
}

// waitsSection states how the run bounded its waits.
func (r *results) waitsSection(p func(string, ...any)) {
	if r.Waits == nil {
		return
	}
	w := r.Waits
	p("## Waits")
	p("")
	p("Every wait of this run was bounded by what this machine measured earlier in the same run, with")
	p("**k = %g** (`BENCH_WAIT_FACTOR`): a fill, refill or start of n runners may take k times raw Nomad's", w.Factor)
	p("register→running of n; a release or drain of n, k times raw Nomad's stop → task processes gone of n")
	p("(the slowest of each seen so far; the nearest larger size measured, or the largest smaller one scaled")
	p("linearly; before any stop is measured, the start of the same size). No wait is shorter than %s;", w.Floor)
	p("the first raw Nomad start, before anything is measured, may take %s. A repetition whose wait runs out", w.First)
	p("fails with its reason and the run goes on; each repetition starts on a drained node (no process of a")
	p("previous repetition's allocations left, checked in /proc; what outlives its budget is killed and reported).")
	p("The anchors at the end of the run:")
	p("")
	for _, l := range w.describe() {
		p("- %s", l)
	}
	p("")
}

func (r *results) failuresSection(p func(string, ...any)) {
	p("## Failed repetitions")
	p("")
	if len(r.Failures) == 0 {
		p("None.")
		p("")
		return
	}
	p("| section | repetition | after | reason | figures it had measured |")
	p("| --- | --- | --- | --- | --- |")
	for _, f := range r.Failures {
		p("| %s | %d | %.0f s | %s | %s |", f.Section, f.Rep, f.AfterS, cell(f.Reason), cell(strings.Join(f.Partial, "; ")))
	}
	p("")
}

// cell makes text fit one Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 600 {
		s = s[:600] + " …"
	}
	return s
}

// sizesNote warns when the previous run measured other sizes.
func (r *results) sizesNote() string {
	if r.Previous == nil || sameSizes(r.Previous.Config, r.Config) {
		return ""
	}
	c := r.Previous.Config
	return fmt.Sprintf(" **The previous run measured other sizes** (N %d, claim pool %d, %d repetitions, Nomad niced %v): compare with care.", c.N, c.ClaimPool, c.Reps, c.NomadNiced)
}
