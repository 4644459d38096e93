package controllers

import (
	"cmp"
	"slices"
	"time"
)

// PoolRunner is what the pool maths needs to know of one runner.
type PoolRunner struct {
	Name    string
	Created time.Time
}

// PoolInput is an environment's runners by phase and template hash, as the
// cache shows them, plus what this operator has in flight. Runners being
// deleted (deletionTimestamp set) are left out by the caller; Claimed runners
// are only counted: they are never candidates for anything.
type PoolInput struct {
	// Target is spec.prewarmingPoolSize: idle runners to keep.
	Target int

	// Runners of the current template hash.
	Idle    []PoolRunner
	Pending []PoolRunner
	// Runners of an older template hash (a spec change is rolling out).
	StaleIdle    []PoolRunner
	StalePending []PoolRunner
	// Failed runners that nobody holds: they will never serve.
	FailedUnclaimed []PoolRunner
	// Claimed runners (failed ones too, until their holder releases them):
	// never candidates, but they count against MaxRunners.
	Claimed int
	// MaxRunners caps idle, pending, stale and claimed runners together
	// (ExecutionEnvironment.RunnerLimit); 0 means no cap.
	MaxRunners int

	// InFlightCreates are runners this operator created that the cache does not
	// show yet (expectations); they count as current Pending.
	InFlightCreates int

	// MaxSurge bounds how many runners above Target may exist during a rollout;
	// at least 1, or a rollout could never start.
	MaxSurge int
	// MaxCreatesPerPass bounds the creations of one reconcile (bounded
	// parallelism); the rest come in the next pass.
	MaxCreatesPerPass int
	// HoldCreates stops all creations this pass (crash-loop backoff, or Nomad
	// unreachable); deletions still happen.
	HoldCreates bool
}

// PoolAction is what one reconcile pass does.
type PoolAction struct {
	// Create is the number of new runners (of the current hash) to create.
	Create int
	// Delete lists the runners to delete, each with a resourceVersion
	// precondition so that one claimed meanwhile survives.
	Delete []string
	// Partial is true when a per-pass cap left work for the next pass.
	Partial bool
}

// ComputePoolAction is the whole pool policy, as a pure function:
//   - failed runners nobody holds are deleted, and stale pending ones too (they
//     would be replaced the moment they became idle);
//   - a stale idle runner is deleted only once the idle runners exceed the
//     target, so a rollout never lowers what can be claimed;
//   - current runners above the target are deleted, pending before idle and the
//     newest first (the least invested);
//   - runners are created until current idle+pending+in-flight reach the
//     target, with at most MaxSurge runners above the target in all, and
//     never more than MaxRunners runners, claimed ones included.
func ComputePoolAction(in PoolInput) PoolAction {
	var act PoolAction
	maxSurge := max(in.MaxSurge, 1)
	maxCreates := in.MaxCreatesPerPass
	if maxCreates <= 0 {
		maxCreates = in.Target + maxSurge
	}

	del := func(rs []PoolRunner, n int) {
		for _, r := range newestFirst(rs)[:min(n, len(rs))] {
			act.Delete = append(act.Delete, r.Name)
		}
	}
	del(in.FailedUnclaimed, len(in.FailedUnclaimed))
	del(in.StalePending, len(in.StalePending))

	// Replaced stale idle runners: those above the target once the new ones run.
	idle := len(in.Idle) + len(in.StaleIdle)
	staleGone := min(len(in.StaleIdle), max(0, idle-in.Target))
	del(in.StaleIdle, staleGone)
	staleLeft := len(in.StaleIdle) - staleGone

	// Current runners above the target (a scale-down).
	current := len(in.Idle) + len(in.Pending) + in.InFlightCreates
	if excess := current - in.Target; excess > 0 {
		fromPending := min(excess, len(in.Pending))
		del(in.Pending, fromPending)
		del(in.Idle, excess-fromPending)
		current -= min(excess, len(in.Pending)+len(in.Idle))
	}

	missing := in.Target - current
	room := in.Target + maxSurge - (current + staleLeft)
	if staleLeft == 0 {
		room = missing
	}
	want := max(0, min(missing, room))
	if in.MaxRunners > 0 {
		// Runners deleted this pass are not counted: they are on their way out.
		want = min(want, max(0, in.MaxRunners-(current+staleLeft+in.Claimed)))
	}
	if in.HoldCreates {
		act.Partial = want > 0
		return act
	}
	act.Create = min(want, maxCreates)
	act.Partial = act.Create < want
	return act
}

func newestFirst(rs []PoolRunner) []PoolRunner {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b PoolRunner) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}
