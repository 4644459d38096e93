package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These run in make test: the bench's own decisions, without a cluster.

func TestClassify(t *testing.T) {
	const dir = "/tmp/nro-test-nomad-1/data/alloc/"
	env := func(kv ...string) []byte { return []byte(strings.Join(kv, "\x00") + "\x00") }
	for _, tc := range []struct {
		name             string
		cmdline, environ []byte
		kind             procKind
		alloc            string
	}{
		{"task of ours", []byte("/bin/sleep\x00infinity\x00"),
			env("PATH=/bin", "NOMAD_ALLOC_ID=a1", "NOMAD_ALLOC_DIR="+dir+"a1/alloc"), allocTask, "a1"},
		{"task of another agent", []byte("/bin/sleep\x00infinity\x00"),
			env("NOMAD_ALLOC_ID=a2", "NOMAD_ALLOC_DIR=/tmp/nro-test-nomad-2/data/alloc/a2/alloc"), notOurs, ""},
		{"executor naming its log under the allocation", []byte("/cache/nomad\x00executor\x00{\"LogFile\":\"" + dir + "a3/runner/executor.out\"}\x00"),
			env("TMPDIR=/tmp/x"), allocHelper, "a3"},
		{"unrelated process", []byte("go\x00build\x00"), env("HOME=/root"), notOurs, ""},
		{"alloc id without a dir", []byte("sleep\x00"), env("NOMAD_ALLOC_ID=a4"), notOurs, ""},
		{"unreadable (ended)", nil, nil, notOurs, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, alloc := classify(dir, tc.cmdline, tc.environ)
			if kind != tc.kind || alloc != tc.alloc {
				t.Errorf("classify = %v %q, want %v %q", kind, alloc, tc.kind, tc.alloc)
			}
		})
	}
}

func TestStartedSecondsAgo(t *testing.T) {
	// A comm with spaces and parentheses, as /proc allows.
	stat := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 150000 1000 10 0"
	got, ok := startedSecondsAgo(stat, 1600)
	if !ok || got != 100 {
		t.Errorf("startedSecondsAgo = %v %v, want 100 true", got, ok)
	}
	if _, ok := startedSecondsAgo("garbage", 1); ok {
		t.Error("garbage parsed")
	}
}

func TestAnchorFor(t *testing.T) {
	m := map[int]time.Duration{50: 10 * time.Second, 200: 80 * time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{50, 10 * time.Second},   // the same size
		{20, 10 * time.Second},   // the smallest larger size bounds less work
		{100, 80 * time.Second},  // likewise
		{400, 160 * time.Second}, // beyond: the largest scaled linearly
	} {
		if got, ok := anchorFor(m, tc.n); !ok || got != tc.want {
			t.Errorf("anchorFor(%d) = %v %v, want %v", tc.n, got, ok, tc.want)
		}
	}
	if _, ok := anchorFor(map[int]time.Duration{}, 5); ok {
		t.Error("an anchor without any measurement")
	}
}

func TestPaceBudgets(t *testing.T) {
	p := newPace(5)
	if got := p.startBudget(200); got != p.First {
		t.Errorf("before any measurement: %v, want the first bound %v", got, p.First)
	}
	p.observeStart(1, 2*time.Second)
	if got := p.startBudget(1); got != p.Floor {
		t.Errorf("5 × 2s is under the floor: %v, want %v", got, p.Floor)
	}
	if got := p.startBudget(50); got != 500*time.Second {
		t.Errorf("50 from 1 scaled linearly: %v, want 500s", got)
	}
	p.observeStart(200, 80*time.Second)
	p.observeStart(200, 60*time.Second) // the slowest seen stays
	if got := p.startBudget(200); got != 400*time.Second {
		t.Errorf("startBudget(200) = %v, want 400s", got)
	}
	if got := p.releaseBudget(200); got != 400*time.Second {
		t.Errorf("a release before any stop is measured is bounded by the start: %v", got)
	}
	p.observeRelease(200, 30*time.Second)
	if got := p.releaseBudget(200); got != 150*time.Second {
		t.Errorf("releaseBudget(200) = %v, want 150s", got)
	}
}

func TestSummariseP99(t *testing.T) {
	r := &results{}
	for i := 1; i <= 200; i++ {
		r.add("x", float64(i))
	}
	r.summarise()
	f := r.fig("x")
	if f.Median != 100.5 || f.P99 != 198 || f.N != 200 {
		t.Errorf("median %v p99 %v n %v, want 100.5 198 200", f.Median, f.P99, f.N)
	}
}

func TestAddedSince(t *testing.T) {
	r := &results{}
	r.add("a", 1)
	before := r.counts()
	r.add("a", 2)
	r.add("b", 3)
	r.add("b", 4)
	r.add(cpuPrefix+"x", 5)
	got := strings.Join(r.addedSince(before), "; ")
	if got != "a = 2; b (2 values)" {
		t.Errorf("addedSince = %q", got)
	}
}

// The previous run is the last complete one of the same sizes: a report cut
// short, or a smoke run of other sizes, points past itself to the run before.
func TestLoadPrevious(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	save := func(r *results) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "docs", "benchmarks.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	full, smoke := config{N: 200, Reps: 3}, config{N: 50, Reps: 2}
	if loadPrevious(root, full) != nil {
		t.Fatal("a previous run without a file")
	}
	done := &results{Config: full, Started: "A", Targets: []target{{What: "t", Ratio: 1.1}}}
	done.add("raw_nomad_register_to_running_50_s", 3)
	done.add("claim_p99_ms_c1", 9)
	save(done)
	prev := loadPrevious(root, full)
	if prev == nil || prev.Started != "A" || prev.fig("raw_nomad_register_to_running_50_s").Median != 3 ||
		prev.fig("claim_p99_ms_c1") != nil || prev.target("t").Ratio != 1.1 {
		t.Fatalf("previous of a complete run: %+v", prev)
	}
	save(&results{Config: full, Started: "B", Incomplete: true, Previous: prev})
	if got := loadPrevious(root, full); got == nil || got.Started != "A" {
		t.Fatalf("previous of a run cut short: %+v, want A", got)
	}
	// A smoke run compares with A (other sizes, said so) and keeps it.
	fromSmoke := loadPrevious(root, smoke)
	if fromSmoke == nil || fromSmoke.Started != "A" {
		t.Fatalf("a smoke run's previous: %+v, want A", fromSmoke)
	}
	save(&results{Config: smoke, Started: "S", Targets: []target{{What: "t"}}, Previous: fromSmoke})
	if got := loadPrevious(root, full); got == nil || got.Started != "A" {
		t.Fatalf("a full run after a smoke run: %+v, want A", got)
	}
	if got := loadPrevious(root, smoke); got == nil || got.Started != "S" {
		t.Fatalf("a smoke run after a smoke run: %+v, want S", got)
	}
	r := &results{Config: smoke, Previous: fromSmoke}
	if !strings.Contains(r.sizesNote(), "other sizes") {
		t.Error("no note on other sizes")
	}
}

func TestMarkdownStatesStatusWaitsAndFailures(t *testing.T) {
	r := &results{Config: config{Reps: 1, N: 200, ClaimPool: 100, Claims: map[int]int{32: 50}, WaitFactor: 5}, Waits: newPace(5)}
	r.Config.Claims[32] = 50
	r.Waits.observeStart(200, 90*time.Second)
	r.add("raw_nomad_register_to_running_200_s", 90)
	r.add("operator_release_to_gone_200_s", 2)
	r.add("raw_nomad_release_to_gone_200_s", 1)
	r.add("operator_release_to_gone_50_s", 60)
	r.add("operator_release_still_running_50", 1)
	r.fail("cold fill", 1, "pool not filled | 114 idle", 300*time.Second, []string{"cold_fill_s = 92"})
	r.evaluate()
	md := r.markdown()
	for _, want := range []string{
		"**Status: complete, 1 failed repetitions**",
		"**k = 5**",
		"200 → 90.0 s (waits up to 450 s)",
		"| cold fill | 1 | 300 s | pool not filled \\| 114 idle | cold_fill_s = 92 |",
		"| 200 | 2 / 2 s (1) | 1 / 1 s (1) | 2.00 | – |",
		"| 50 | 60 / 60 s (1), **1 still running at the budget (p99 ≥)** | – | – | – |",
		"| released runners whose task still runs after k × raw Nomad's stop = 0 (all repetitions), release of 50 | `operator_release_still_running_50` = 1 |  |  | 0 | **missed** | – |",
		"| released runners whose task still runs after k × raw Nomad's stop = 0 (all repetitions), release of 200 | `operator_release_still_running_200` = 0 |  |  | 0 | met | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
