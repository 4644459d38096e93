// Package runnerphase says in which phase a Runner counts, for everyone who
// counts them: the pool maths, the ExecutionEnvironment status and the pool
// gauges. One rule for all three, so the status, the gauges and what the pool
// does about them cannot disagree. It sits apart from controllers because the
// metrics package, which controllers import, counts runners too.
package runnerphase

import (
	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// Of is the phase rn counts in: its status.phase, and Pending while that is
// unset (the API server defaults it to Pending, a cache of raw objects might not).
func Of(rn *v1alpha1.Runner) v1alpha1.RunnerPhase {
	switch p := rn.Status.Phase; p {
	case v1alpha1.RunnerIdle, v1alpha1.RunnerClaimed, v1alpha1.RunnerFailed:
		return p
	default:
		return v1alpha1.RunnerPending
	}
}

// Counted is false for a runner being deleted: it is on its way out, serves
// no one, and counts in no phase.
func Counted(rn *v1alpha1.Runner) bool { return rn.DeletionTimestamp.IsZero() }

// Counts are an environment's runners by phase, those Counted only.
type Counts struct {
	Pending, Idle, Claimed, Failed int
	// WaitingForNomad are the Pending runners whose job Nomad has no room for
	// yet (status.reason WaitingForNomad).
	WaitingForNomad int
	// FailedHeld are the Failed runners whose holder has not released them yet.
	FailedHeld int
}

// CountByPhase counts runners by the phase each counts in (Of).
func CountByPhase(runners []v1alpha1.Runner) Counts {
	var c Counts
	for i := range runners {
		c.Add(&runners[i])
	}
	return c
}

// Add counts one more runner.
func (c *Counts) Add(rn *v1alpha1.Runner) {
	if !Counted(rn) {
		return
	}
	switch Of(rn) {
	case v1alpha1.RunnerIdle:
		c.Idle++
	case v1alpha1.RunnerClaimed:
		c.Claimed++
	case v1alpha1.RunnerFailed:
		c.Failed++
		if rn.Status.Claim != nil {
			c.FailedHeld++
		}
	default:
		c.Pending++
		if rn.Status.Reason == v1alpha1.ReasonWaitingForNomad {
			c.WaitingForNomad++
		}
	}
}

// Held are the runners a client holds: claimed ones, and failed ones until
// their holder releases them. The operator never deletes them for the pool.
func (c Counts) Held() int { return c.Claimed + c.FailedHeld }

// AgainstLimit are the runners that count against the environment's runner
// limit: all but the failed ones nobody holds, which are deleted anyway.
func (c Counts) AgainstLimit() int { return c.Pending + c.Idle + c.Held() }

// InPhase is the count of phase p.
func (c Counts) InPhase(p v1alpha1.RunnerPhase) int {
	switch p {
	case v1alpha1.RunnerIdle:
		return c.Idle
	case v1alpha1.RunnerClaimed:
		return c.Claimed
	case v1alpha1.RunnerFailed:
		return c.Failed
	case v1alpha1.RunnerPending:
		return c.Pending
	}
	return 0
}

// Phases are the phases a runner can count in, in the order of its life.
var Phases = []v1alpha1.RunnerPhase{v1alpha1.RunnerPending, v1alpha1.RunnerIdle, v1alpha1.RunnerClaimed, v1alpha1.RunnerFailed}
