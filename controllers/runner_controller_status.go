package controllers

import (
	"fmt"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

const (
	// placementGrace is how long a runner without an allocation may wait before
	// Nomad is asked why it is not placed.
	placementGrace = 3 * time.Second
	// startupQuiet is how long a runner that starts normally (Pending, nothing
	// to report) goes without a status write: see holdBack.
	startupQuiet = 10 * time.Second
)

// runnerObservation is what one reconcile read about a runner: its status as
// the cache shows it, and what Nomad says about its job.
type runnerObservation struct {
	// Status is the runner's status as read; Generation its metadata.generation.
	Status     v1alpha1.RunnerStatus
	Generation int64
	// JobID and Namespace name the runner's Nomad job (from its annotations).
	JobID, Namespace string
	// Created is when the runner was made; Now is when it was read.
	Created, Now time.Time
	// JobGone: Nomad does not know the job. Otherwise Allocations are the
	// job's allocations, newest first (none: not placed yet). Neither is read
	// for a Failed runner.
	JobGone     bool
	Allocations []*nomad.AllocationListStub
	// WhyUnplaced is Nomad's answer to why the job has no allocation ("": it
	// names no failure), nil when it was not asked (see askWhyUnplaced).
	WhyUnplaced *string
}

// runnerDecision is what a reconcile does about a runner.
type runnerDecision struct {
	// Status is the status to write, with observedGeneration and the Ready
	// condition; the ports come in later when ReadPorts says so.
	Status v1alpha1.RunnerStatus
	// ReadPorts: the allocation just turned running. Its ports are fixed for
	// its life, so they are read now, once.
	ReadPorts bool
	// WriteIn keeps the status write back this long (see holdBack); 0: write now.
	WriteIn time.Duration
	// AskNomadIn is when the placement grace of an unplaced runner ends and
	// Nomad is asked why it waits; 0: not needed.
	AskNomadIn time.Duration
	// ClaimExpiresIn is how long the claim lasts without a renewal (0: no
	// deadline); ClaimExpired: its holder stopped renewing, the runner is deleted.
	ClaimExpiresIn time.Duration
	ClaimExpired   bool
	// Event is the Warning that tells users about the change, nil for none.
	Event *runnerEvent
}

// runnerEvent is a Warning Event on the runner.
type runnerEvent struct {
	Reason, Action, Note string
}

// computeRunnerStatus maps what Nomad says about a runner's job to its phase,
// reason and Ready condition, and tells when to write it, when to ask Nomad
// again and when the claim expires. A runner only moves forward: Pending →
// Idle → Claimed, and any of them to Failed, which it never leaves.
func computeRunnerStatus(o runnerObservation) runnerDecision {
	st := *o.Status.DeepCopy()
	if needsRegistration(o.Status) {
		// reconcileNormal computes only once the job is registered.
		st.Phase = v1alpha1.RunnerPending
		st.NomadJobID, st.NomadNamespace = o.JobID, o.Namespace
	}
	d := runnerDecision{}
	if st.Phase != v1alpha1.RunnerFailed {
		if o.JobGone {
			failRunner(&st, v1alpha1.ReasonNomadJobLost, fmt.Sprintf("Nomad job %s is gone.", o.JobID))
		} else {
			observeAllocations(&st, o.Allocations)
		}
	}
	if waitsForPlacement(o) {
		// Held as Pending, never deleted and recreated: say why it waits. Not
		// while Nomad is still at it (a filling pool of 200 would otherwise read
		// 200 evaluations that say nothing): look once the grace is over.
		switch {
		case o.WhyUnplaced != nil && *o.WhyUnplaced != "":
			st.Reason = v1alpha1.ReasonWaitingForNomad
			st.Message = "Nomad cannot place the runner yet: " + *o.WhyUnplaced + "."
		case o.WhyUnplaced != nil:
			st.Reason, st.Message = "", ""
		case !askWhyUnplaced(o):
			d.AskNomadIn = placementGrace - o.Now.Sub(o.Created)
		}
	}
	st.ObservedGeneration = o.Generation
	meta.SetStatusCondition(&st.Conditions, readyCondition(&st, o.Generation, o.Now))

	switch {
	case st.Reason == v1alpha1.ReasonWaitingForNomad && o.Status.Reason != st.Reason:
		d.Event = &runnerEvent{Reason: v1alpha1.ReasonWaitingForNomad, Action: "Schedule", Note: st.Message}
	case st.Phase == v1alpha1.RunnerFailed && o.Status.Phase != st.Phase:
		d.Event = &runnerEvent{Reason: st.Reason, Action: "Observe", Note: st.Message}
	}
	d.ReadPorts = st.Phase == v1alpha1.RunnerIdle && o.Status.Phase != v1alpha1.RunnerIdle
	d.WriteIn = holdBack(&st, o.Created, o.Now)
	if deadline, ok := claimDeadline(st.Claim); ok {
		if wait := deadline.Sub(o.Now); wait > 0 {
			d.ClaimExpiresIn = wait
		} else {
			d.ClaimExpired = true
		}
	}
	d.Status = st
	return d
}

// needsRegistration tells whether the runner's job is not registered as far as
// its status says. The status is written later (see holdBack), and a
// registration of a job registered already is a no-op.
func needsRegistration(st v1alpha1.RunnerStatus) bool {
	return st.NomadJobID == "" && (st.Phase == "" || st.Phase == v1alpha1.RunnerPending)
}

// waitsForPlacement tells whether the runner is Pending and its job was never
// placed: no allocation now, none before.
func waitsForPlacement(o runnerObservation) bool {
	phase := o.Status.Phase
	if needsRegistration(o.Status) {
		phase = v1alpha1.RunnerPending
	}
	return phase == v1alpha1.RunnerPending && !o.JobGone && len(o.Allocations) == 0 && o.Status.AllocationID == ""
}

// askWhyUnplaced tells whether Nomad is asked why the runner waits before its
// status is computed: once the placement grace is over, and on every look
// while a reason is shown, so that it stays true.
func askWhyUnplaced(o runnerObservation) bool {
	return waitsForPlacement(o) && (o.Now.Sub(o.Created) >= placementGrace || o.Status.Reason != "")
}

// holdBack tells how long to keep back the status write of a runner that is
// still starting normally: Pending, no reason to report (Nomad's placement
// failure is one, written at once), younger than startupQuiet. Its
// registration and its allocation's placement are progress nobody acts on
// (claimers wait for Idle), and writing each would triple the API writes of
// every fill and refill: a runner that starts within startupQuiet costs one
// status write, Pending→Idle. 0: write now.
func holdBack(st *v1alpha1.RunnerStatus, created, now time.Time) time.Duration {
	if st.Phase != v1alpha1.RunnerPending || st.Reason != "" {
		return 0
	}
	return max(startupQuiet-now.Sub(created), 0)
}

// claimDeadline is when a claim lapses unless renewed; false: never.
func claimDeadline(c *v1alpha1.RunnerClaim) (time.Time, bool) {
	if c == nil || c.InactivityTimeoutSeconds <= 0 {
		return time.Time{}, false
	}
	return lastActivity(c).Add(time.Duration(c.InactivityTimeoutSeconds) * time.Second), true
}

// lastActivity is the claim's last sign of life: its last renewal, or its making.
func lastActivity(c *v1alpha1.RunnerClaim) time.Time {
	if c.LastActivityTime != nil && c.LastActivityTime.After(c.ClaimedAt.Time) {
		return c.LastActivityTime.Time
	}
	return c.ClaimedAt.Time
}

// observeAllocations maps the job's allocations to the runner's phase. Once
// Claimed a runner can only fail, and anything that makes the allocation a
// different one (a restart, a replacement) fails it.
func observeAllocations(st *v1alpha1.RunnerStatus, allocs []*nomad.AllocationListStub) {
	if len(allocs) == 0 {
		if st.AllocationID != "" {
			failRunner(st, v1alpha1.ReasonNomadJobLost, fmt.Sprintf("Allocation %s is gone from Nomad.", short(st.AllocationID)))
		}
		return // never placed yet: waiting for an evaluation or for capacity, stays Pending
	}
	alloc := allocs[0]
	if st.AllocationID != "" && st.AllocationID != alloc.ID {
		failRunner(st, v1alpha1.ReasonAllocationFailed, fmt.Sprintf("Allocation %s was replaced by %s.", short(st.AllocationID), short(alloc.ID)))
		return
	}
	st.AllocationID = alloc.ID
	st.NodeName = alloc.NodeName
	for name, ts := range alloc.TaskStates {
		if ts == nil {
			continue
		}
		if reason, msg, bad := taskTrouble(name, ts); bad {
			failRunner(st, reason, msg)
			return
		}
	}
	switch alloc.ClientStatus {
	case nomad.AllocClientStatusRunning:
		if st.Phase == v1alpha1.RunnerPending {
			st.Phase = v1alpha1.RunnerIdle
			st.Reason, st.Message = "", ""
		}
	case nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost, nomad.AllocClientStatusComplete:
		failRunner(st, v1alpha1.ReasonAllocationFailed, fmt.Sprintf("Allocation %s is %s: %s.", short(alloc.ID), alloc.ClientStatus, alloc.ClientDescription))
	}
	if alloc.DesiredStatus == nomad.AllocDesiredStatusStop && st.Phase != v1alpha1.RunnerFailed {
		failRunner(st, v1alpha1.ReasonNomadJobLost, fmt.Sprintf("Allocation %s was stopped in Nomad.", short(alloc.ID)))
	}
}

// taskTrouble reports a task that was OOM-killed, restarted or failed.
func taskTrouble(task string, ts *nomad.TaskState) (reason, message string, bad bool) {
	for _, e := range ts.Events {
		if e != nil && e.Type == nomad.TaskTerminated && e.Details["oom_killed"] == "true" {
			return v1alpha1.ReasonOOMKilled, fmt.Sprintf("Task %s ran out of memory and was killed.", task), true
		}
	}
	if ts.Restarts > 0 {
		return v1alpha1.ReasonAllocationRestart, fmt.Sprintf("Task %s restarted %d times; a restarted runner is a different runner.", task, ts.Restarts), true
	}
	if ts.Failed || ts.State == "dead" {
		msg := fmt.Sprintf("Task %s is %s.", task, ts.State)
		if n := len(ts.Events); n > 0 && ts.Events[n-1] != nil && ts.Events[n-1].DisplayMessage != "" {
			msg = fmt.Sprintf("Task %s is %s: %s.", task, ts.State, strings.TrimSuffix(ts.Events[n-1].DisplayMessage, "."))
		}
		return v1alpha1.ReasonAllocationFailed, msg, true
	}
	return "", "", false
}

func failRunner(st *v1alpha1.RunnerStatus, reason, message string) {
	st.Phase = v1alpha1.RunnerFailed
	st.Reason, st.Message = reason, message
}

// readyCondition is the runner's Ready condition: True while its allocation
// runs (Idle or Claimed), False with the reason otherwise.
func readyCondition(st *v1alpha1.RunnerStatus, generation int64, now time.Time) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ReadyCondition, ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now)}
	switch st.Phase {
	case v1alpha1.RunnerIdle, v1alpha1.RunnerClaimed:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1alpha1.ReasonAsExpected, "Allocation "+short(st.AllocationID)+" is running."
	case v1alpha1.RunnerFailed:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, st.Reason, st.Message
	case v1alpha1.RunnerPending:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Pending", "Waiting for the Nomad allocation to run."
		if st.Reason != "" {
			c.Reason, c.Message = st.Reason, st.Message
		}
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Pending", "Waiting for the Nomad job to be registered."
	}
	if c.Reason == "" {
		c.Reason = v1alpha1.ReasonInternalError
	}
	return c
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
