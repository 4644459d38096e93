package bench

import (
	"fmt"
	"sort"
	"time"
)

// pace bounds every wait of a run by what this machine measured earlier in
// the same run, so a slow machine (or a slow hour of a shared one) gets the
// time it needs and a fast one does not wait minutes for a stuck phase: work
// on n runners may take up to Factor times raw Nomad's time for the same
// work. Raw Nomad's register→running bounds starts and fills; its stop →
// task processes gone bounds releases and drains.
type pace struct {
	// Factor is k: a wait gives up after k times its anchor.
	Factor float64 `json:"factor"`
	// Floor is the least any wait gets, so a sub-second anchor does not make
	// a wait fail on one scheduling hiccup.
	Floor time.Duration `json:"floor"`
	// First bounds the first raw Nomad start of the run, before anything is
	// measured.
	First time.Duration `json:"first"`
	// Start and Release are the anchors by number of jobs: the slowest raw
	// Nomad register→running and stop→task processes gone seen so far (a
	// wait that gave up counts with the time it waited).
	Start   map[int]time.Duration `json:"start"`
	Release map[int]time.Duration `json:"release"`
}

func newPace(factor float64) *pace {
	return &pace{Factor: factor, Floor: time.Minute, First: 10 * time.Minute,
		Start: map[int]time.Duration{}, Release: map[int]time.Duration{}}
}

func observe(m map[int]time.Duration, n int, d time.Duration) {
	if d > m[n] {
		m[n] = d
	}
}

func (p *pace) observeStart(n int, d time.Duration)   { observe(p.Start, n, d) }
func (p *pace) observeRelease(n int, d time.Duration) { observe(p.Release, n, d) }

// anchorFor is the anchor of work on n runners: the one measured for n; else
// the smallest larger size (more of the same work bounds less); else the
// largest smaller size scaled linearly. ok is false when nothing is measured.
func anchorFor(m map[int]time.Duration, n int) (time.Duration, bool) {
	if d, ok := m[n]; ok {
		return d, true
	}
	sizes := make([]int, 0, len(m))
	for s := range m {
		sizes = append(sizes, s)
	}
	if len(sizes) == 0 {
		return 0, false
	}
	sort.Ints(sizes)
	for _, s := range sizes {
		if s > n {
			return m[s], true
		}
	}
	s := sizes[len(sizes)-1]
	return time.Duration(float64(m[s]) * float64(n) / float64(max(s, 1))), true
}

func (p *pace) scaled(anchor time.Duration) time.Duration {
	return max(p.Floor, time.Duration(p.Factor*float64(anchor)))
}

// startBudget bounds starting (or filling) n runners.
func (p *pace) startBudget(n int) time.Duration {
	a, ok := anchorFor(p.Start, n)
	if !ok {
		return p.First
	}
	return p.scaled(a)
}

// releaseBudget bounds releasing n runners until their processes are gone.
// Before raw Nomad's stop of that size is measured, its start bounds it.
func (p *pace) releaseBudget(n int) time.Duration {
	if a, ok := anchorFor(p.Release, n); ok {
		return p.scaled(a)
	}
	return p.startBudget(n)
}

// describe is the pace as the report states it.
func (p *pace) describe() []string {
	line := func(what string, m map[int]time.Duration) string {
		sizes := make([]int, 0, len(m))
		for s := range m {
			sizes = append(sizes, s)
		}
		sort.Ints(sizes)
		s := what + ":"
		for _, n := range sizes {
			s += fmt.Sprintf(" %d → %.1f s (waits up to %.0f s);", n, m[n].Seconds(), p.scaled(m[n]).Seconds())
		}
		return s
	}
	return []string{line("raw Nomad register→running (slowest seen)", p.Start), line("raw Nomad stop→task processes gone (slowest seen)", p.Release)}
}
