package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

type figure struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
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
	root        string
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
		f.Min, f.Max = v[0], v[len(v)-1]
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
	p("## Targets")
	p("")
	p("| target | figure (median) | anchor | ratio | limit | met |")
	p("| --- | --- | --- | --- | --- | --- |")
	for _, t := range r.Targets {
		met := "**missed**"
		if t.Met {
			met = "met"
		}
		ratio, anchor := "", ""
		if t.Anchor != "" {
			ratio, anchor = fmt.Sprintf("%.2f", t.Ratio), t.Anchor
		}
		value := fmt.Sprintf("%.3g", t.Value)
		p("| %s | `%s` = %s | %s | %s | %g | %s |", t.What, t.Figure, value, anchor, ratio, t.Limit, met)
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
			vals = append(vals, fmt.Sprintf("%d samples", len(f.Values)))
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
