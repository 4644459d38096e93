package controllers

import (
	"cmp"
	"slices"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/internal/runnerphase"
)

// PoolInput is an environment's runners as the cache shows them, plus its
// target, what this operator has in flight, and the caps of one pass.
type PoolInput struct {
	// Target is spec.prewarmingPoolSize: idle runners to keep.
	Target int
	// Hash is the current template hash; runners of another hash are stale (a
	// spec change is rolling out).
	Hash string

	// Runners are the environment's runners. Those being deleted are left
	// out; claimed ones (failed ones too, until their holder releases them)
	// are never candidates for anything, but count against MaxRunners.
	Runners []v1alpha1.Runner
	// Deleting names runners this operator deleted that the cache still shows
	// alive (expectations); they are left out like those being deleted.
	Deleting map[string]bool
	// InFlightCreates are runners this operator created that the cache does not
	// show yet (expectations); they count as current Pending.
	InFlightCreates int

	// MaxRunners caps idle, pending, stale and claimed runners together
	// (ExecutionEnvironment.RunnerLimit); 0 means no cap.
	MaxRunners int
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
	// Delete lists the runners to delete (pointers into PoolInput.Runners),
	// each to be deleted with a resourceVersion precondition so that one
	// claimed meanwhile survives.
	Delete []*v1alpha1.Runner
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
	rs := sortRunners(in)
	maxSurge := max(in.MaxSurge, 1)
	maxCreates := in.MaxCreatesPerPass
	if maxCreates <= 0 {
		maxCreates = in.Target + maxSurge
	}

	del := func(rs []*v1alpha1.Runner, n int) {
		act.Delete = append(act.Delete, newestFirst(rs)[:min(n, len(rs))]...)
	}
	del(rs.failed, len(rs.failed))
	del(rs.stalePending, len(rs.stalePending))

	// Replaced stale idle runners: those above the target once the new ones run.
	idle := len(rs.idle) + len(rs.staleIdle)
	staleGone := min(len(rs.staleIdle), max(0, idle-in.Target))
	del(rs.staleIdle, staleGone)
	staleLeft := len(rs.staleIdle) - staleGone

	// Current runners above the target (a scale-down).
	current := len(rs.idle) + len(rs.pending) + in.InFlightCreates
	if excess := current - in.Target; excess > 0 {
		fromPending := min(excess, len(rs.pending))
		del(rs.pending, fromPending)
		del(rs.idle, excess-fromPending)
		current -= min(excess, len(rs.pending)+len(rs.idle))
	}

	missing := in.Target - current
	room := in.Target + maxSurge - (current + staleLeft)
	if staleLeft == 0 {
		room = missing
	}
	want := max(0, min(missing, room))
	if in.MaxRunners > 0 {
		// Runners deleted this pass are not counted: they are on their way out.
		want = min(want, max(0, in.MaxRunners-(current+staleLeft+rs.held)))
	}
	if in.HoldCreates {
		act.Partial = want > 0
		return act
	}
	act.Create = min(want, maxCreates)
	act.Partial = act.Create < want
	return act
}

// FailedUnclaimed names the failed runners nobody holds, which the pool
// deletes and replaces: the crash-loop backoff counts them.
func (in PoolInput) FailedUnclaimed() []string {
	failed := sortRunners(in).failed
	names := make([]string, 0, len(failed))
	for _, rn := range failed {
		names = append(names, rn.Name)
	}
	return names
}

// poolRunners are an environment's runners sorted by what the pool may do
// with them.
type poolRunners struct {
	// Of the current template hash.
	idle, pending []*v1alpha1.Runner
	// Of an older template hash.
	staleIdle, stalePending []*v1alpha1.Runner
	// Failed runners nobody holds: they will never serve.
	failed []*v1alpha1.Runner
	// held counts the runners a client holds: never candidates.
	held int
}

// sortRunners sorts the runners of in that are not on their way out, by the
// phase each counts in (runnerphase) and by template hash.
func sortRunners(in PoolInput) poolRunners {
	var (
		rs     poolRunners
		counts runnerphase.Counts
	)
	for i := range in.Runners {
		rn := &in.Runners[i]
		if !runnerphase.Counted(rn) || in.Deleting[rn.Name] {
			continue
		}
		counts.Add(rn)
		current := rn.Spec.TemplateHash == in.Hash
		switch runnerphase.Of(rn) {
		case v1alpha1.RunnerIdle:
			if current {
				rs.idle = append(rs.idle, rn)
			} else {
				rs.staleIdle = append(rs.staleIdle, rn)
			}
		case v1alpha1.RunnerPending:
			if current {
				rs.pending = append(rs.pending, rn)
			} else {
				rs.stalePending = append(rs.stalePending, rn)
			}
		case v1alpha1.RunnerFailed:
			if rn.Status.Claim == nil {
				rs.failed = append(rs.failed, rn)
			}
		}
	}
	rs.held = counts.Held()
	return rs
}

func newestFirst(rs []*v1alpha1.Runner) []*v1alpha1.Runner {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b *v1alpha1.Runner) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}
