package controllers

import (
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// TestComputeRunnerStatus is the runner phase mapping: what Nomad says about a
// runner's job, and when, against the status users see and what the
// reconcile does next.
func TestComputeRunnerStatus(t *testing.T) {
	const (
		job       = "python-9b2f6a1e-4c3d-4e5f-8a7b-6c5d4e3f2a1b"
		firstID   = "11111111-aaaa-4bbb-8ccc-dddddddddddd"
		secondID  = "22222222-aaaa-4bbb-8ccc-dddddddddddd"
		noPlace   = "Resources exhausted on 1 nodes: memory"
		noPlaceAt = "Nomad cannot place the runner yet: " + noPlace + "."
	)
	created := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

	// status is a runner's status as the operator writes it: its job, and
	// the allocation (on node-1) when it has one.
	status := func(phase v1alpha1.RunnerPhase, allocID, reason, message string) v1alpha1.RunnerStatus {
		s := v1alpha1.RunnerStatus{Phase: phase, NomadJobID: job, NomadNamespace: "default", AllocationID: allocID,
			Reason: reason, Message: message, ObservedGeneration: 1}
		if allocID != "" {
			s.NodeName = "node-1"
		}
		return s
	}
	// asCreated is a runner's status before any write: the schema's default phase.
	asCreated := v1alpha1.RunnerStatus{Phase: v1alpha1.RunnerPending}
	claimed := func(s v1alpha1.RunnerStatus, claimedAgo, renewedAgo time.Duration, timeoutSeconds int32) v1alpha1.RunnerStatus {
		now := created.Add(time.Hour)
		s.Claim = &v1alpha1.RunnerClaim{Holder: "alice", Token: "t-1", ClaimedAt: metav1.NewTime(now.Add(-claimedAgo)),
			InactivityTimeoutSeconds: timeoutSeconds}
		if renewedAgo > 0 {
			s.Claim.LastActivityTime = ptr.To(metav1.NewTime(now.Add(-renewedAgo)))
		}
		return s
	}
	alloc := func(id, clientStatus string, tasks ...*nomad.TaskState) *nomad.AllocationListStub {
		a := &nomad.AllocationListStub{ID: id, NodeName: "node-1", ClientStatus: clientStatus,
			DesiredStatus: nomad.AllocDesiredStatusRun, ClientDescription: "Tasks are running", TaskStates: map[string]*nomad.TaskState{}}
		for _, ts := range tasks {
			a.TaskStates["main"] = ts
		}
		return a
	}
	running := func(id string, tasks ...*nomad.TaskState) []*nomad.AllocationListStub {
		return []*nomad.AllocationListStub{alloc(id, nomad.AllocClientStatusRunning, tasks...)}
	}
	oom := &nomad.TaskState{State: "running", Events: []*nomad.TaskEvent{
		{Type: nomad.TaskStarted},
		{Type: nomad.TaskTerminated, Details: map[string]string{"oom_killed": "true"}},
	}}
	lost := alloc(firstID, nomad.AllocClientStatusLost)
	lost.ClientDescription = "alloc is lost since its node is down"
	stopped := alloc(firstID, nomad.AllocClientStatusRunning)
	stopped.DesiredStatus = nomad.AllocDesiredStatusStop
	// failure is the decision for a runner that fails now: Failed with the
	// reason, and a Warning that says so.
	failure := func(allocID, reason, message string) runnerDecision {
		return runnerDecision{Status: status(v1alpha1.RunnerFailed, allocID, reason, message),
			Event: &runnerEvent{Reason: reason, Action: "Observe", Note: message}}
	}
	ready := func(s metav1.ConditionStatus, reason, message string) metav1.Condition {
		return metav1.Condition{Type: v1alpha1.ReadyCondition, Status: s, Reason: reason, Message: message}
	}
	starting := ready(metav1.ConditionFalse, "Pending", "Waiting for the Nomad allocation to run.")
	runsFirst := ready(metav1.ConditionTrue, v1alpha1.ReasonAsExpected, "Allocation 11111111 is running.")

	cases := []struct {
		name string
		// in is the runner's status as read; age is how old the runner is.
		in  v1alpha1.RunnerStatus
		age time.Duration
		// What Nomad says: the job is gone, its allocations, why it is unplaced.
		jobGone     bool
		allocs      []*nomad.AllocationListStub
		whyUnplaced *string
		// askNomad: the reconcile asks Nomad why the runner is unplaced before computing.
		askNomad bool
		want     runnerDecision
		ready    metav1.Condition
	}{
		{
			name: "just registered and unplaced within the grace: Pending with its job, nothing written, Nomad asked once the grace ends",
			in:   asCreated, age: time.Second,
			want:  runnerDecision{Status: status(v1alpha1.RunnerPending, "", "", ""), WriteIn: startupQuiet - time.Second, AskNomadIn: placementGrace - time.Second},
			ready: starting,
		},
		{
			name: "placed within the grace: held back until the quiet period ends, Nomad not asked",
			in:   asCreated, age: time.Second,
			allocs: []*nomad.AllocationListStub{alloc(firstID, nomad.AllocClientStatusPending)},
			want:   runnerDecision{Status: status(v1alpha1.RunnerPending, firstID, "", ""), WriteIn: startupQuiet - time.Second},
			ready:  starting,
		},
		{
			name: "unplaced after the grace, Nomad says why: WaitingForNomadCapacity written at once, with a Warning",
			in:   asCreated, age: placementGrace + time.Second, askNomad: true, whyUnplaced: ptr.To(noPlace),
			want: runnerDecision{Status: status(v1alpha1.RunnerPending, "", v1alpha1.ReasonWaitingForNomad, noPlaceAt),
				Event: &runnerEvent{Reason: v1alpha1.ReasonWaitingForNomad, Action: "Schedule", Note: noPlaceAt}},
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonWaitingForNomad, noPlaceAt),
		},
		{
			name: "unplaced after the grace, Nomad names no failure: still starting, held back",
			in:   asCreated, age: placementGrace + time.Second, askNomad: true, whyUnplaced: ptr.To(""),
			want:  runnerDecision{Status: status(v1alpha1.RunnerPending, "", "", ""), WriteIn: startupQuiet - placementGrace - time.Second},
			ready: starting,
		},
		{
			name: "still unplaced for the same reason: asked again, no second Warning",
			in:   status(v1alpha1.RunnerPending, "", v1alpha1.ReasonWaitingForNomad, noPlaceAt), age: time.Minute,
			askNomad: true, whyUnplaced: ptr.To(noPlace),
			want:  runnerDecision{Status: status(v1alpha1.RunnerPending, "", v1alpha1.ReasonWaitingForNomad, noPlaceAt)},
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonWaitingForNomad, noPlaceAt),
		},
		{
			name: "a shown reason is kept true even within the grace: Nomad no longer names a failure, the reason goes",
			in:   status(v1alpha1.RunnerPending, "", v1alpha1.ReasonWaitingForNomad, noPlaceAt), age: time.Second,
			askNomad: true, whyUnplaced: ptr.To(""),
			want:  runnerDecision{Status: status(v1alpha1.RunnerPending, "", "", ""), WriteIn: startupQuiet - time.Second},
			ready: starting,
		},
		{
			name: "placed after a wait: the allocation is recorded, the reason stays until it runs",
			in:   status(v1alpha1.RunnerPending, "", v1alpha1.ReasonWaitingForNomad, noPlaceAt), age: time.Minute,
			allocs: []*nomad.AllocationListStub{alloc(firstID, nomad.AllocClientStatusPending)},
			want:   runnerDecision{Status: status(v1alpha1.RunnerPending, firstID, v1alpha1.ReasonWaitingForNomad, noPlaceAt)},
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonWaitingForNomad, noPlaceAt),
		},
		{
			name: "placed and still starting when the quiet period ends: written as Pending",
			in:   asCreated, age: startupQuiet + time.Second,
			allocs: []*nomad.AllocationListStub{alloc(firstID, nomad.AllocClientStatusPending)},
			want:   runnerDecision{Status: status(v1alpha1.RunnerPending, firstID, "", "")},
			ready:  starting,
		},
		{
			name: "running on the first look: straight to Idle in one write, ports read",
			in:   asCreated, age: 2 * time.Second, allocs: running(firstID),
			want:  runnerDecision{Status: status(v1alpha1.RunnerIdle, firstID, "", ""), ReadPorts: true},
			ready: runsFirst,
		},
		{
			name: "running → Idle: the waiting reason goes",
			in:   status(v1alpha1.RunnerPending, firstID, v1alpha1.ReasonWaitingForNomad, noPlaceAt), age: time.Minute, allocs: running(firstID),
			want:  runnerDecision{Status: status(v1alpha1.RunnerIdle, firstID, "", ""), ReadPorts: true},
			ready: runsFirst,
		},
		{
			name: "Idle and still running: nothing changes, ports not read again",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour, allocs: running(firstID),
			want:  runnerDecision{Status: status(v1alpha1.RunnerIdle, firstID, "", "")},
			ready: runsFirst,
		},
		{
			name: "OOM-killed: Failed with a Warning",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour, allocs: running(firstID, oom),
			want:  failure(firstID, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."),
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."),
		},
		{
			name: "a restarted task fails the runner: a restarted runner is a different runner",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour,
			allocs: running(firstID, &nomad.TaskState{State: "running", Restarts: 1}),
			want:   failure(firstID, v1alpha1.ReasonAllocationRestart, "Task main restarted 1 times; a restarted runner is a different runner."),
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonAllocationRestart, "Task main restarted 1 times; a restarted runner is a different runner."),
		},
		{
			name: "a dead task while starting: Failed with Nomad's last message",
			in:   asCreated, age: 5 * time.Second,
			allocs: []*nomad.AllocationListStub{alloc(firstID, nomad.AllocClientStatusPending, &nomad.TaskState{State: "dead", Failed: true,
				Events: []*nomad.TaskEvent{{Type: nomad.TaskDriverFailure, DisplayMessage: "Failed to pull image."}}})},
			want:  failure(firstID, v1alpha1.ReasonAllocationFailed, "Task main is dead: Failed to pull image."),
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonAllocationFailed, "Task main is dead: Failed to pull image."),
		},
		{
			name: "a lost allocation: Failed with its client status",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour,
			allocs: []*nomad.AllocationListStub{lost},
			want:   failure(firstID, v1alpha1.ReasonAllocationFailed, "Allocation 11111111 is lost: alloc is lost since its node is down."),
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonAllocationFailed, "Allocation 11111111 is lost: alloc is lost since its node is down."),
		},
		{
			name: "a replaced allocation: Failed, the status keeps naming the first one",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour,
			allocs: append(running(secondID), alloc(firstID, nomad.AllocClientStatusFailed)),
			want:   failure(firstID, v1alpha1.ReasonAllocationFailed, "Allocation 11111111 was replaced by 22222222."),
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonAllocationFailed, "Allocation 11111111 was replaced by 22222222."),
		},
		{
			name: "the allocation is gone: Failed, NomadJobLost",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour,
			want:  failure(firstID, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 is gone from Nomad."),
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 is gone from Nomad."),
		},
		{
			name: "the allocation was stopped in Nomad: Failed, NomadJobLost",
			in:   status(v1alpha1.RunnerIdle, firstID, "", ""), age: time.Hour,
			allocs: []*nomad.AllocationListStub{stopped},
			want:   failure(firstID, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 was stopped in Nomad."),
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 was stopped in Nomad."),
		},
		{
			name: "the job is gone: Failed, NomadJobLost, never taken for an unplaced runner",
			in:   status(v1alpha1.RunnerPending, "", "", ""), age: time.Minute, jobGone: true,
			want:  failure("", v1alpha1.ReasonNomadJobLost, "Nomad job "+job+" is gone."),
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonNomadJobLost, "Nomad job "+job+" is gone."),
		},
		{
			name: "claimed and running: stays Claimed, looked at again when the claim would lapse",
			in:   claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 10*time.Second, 0, 60), age: time.Hour, allocs: running(firstID),
			want:  runnerDecision{Status: claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 10*time.Second, 0, 60), ClaimExpiresIn: 50 * time.Second},
			ready: runsFirst,
		},
		{
			name: "a renewal moves the claim's deadline",
			in:   claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 100*time.Second, 5*time.Second, 60), age: time.Hour, allocs: running(firstID),
			want: runnerDecision{Status: claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 100*time.Second, 5*time.Second, 60),
				ClaimExpiresIn: 55 * time.Second},
			ready: runsFirst,
		},
		{
			name: "inactivity past the deadline: the runner is deleted",
			in:   claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 100*time.Second, 61*time.Second, 60), age: time.Hour, allocs: running(firstID),
			want: runnerDecision{Status: claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 100*time.Second, 61*time.Second, 60),
				ClaimExpired: true},
			ready: runsFirst,
		},
		{
			name: "an inactivity timeout of 0 never lapses",
			in:   claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 50*time.Minute, 0, 0), age: time.Hour, allocs: running(firstID),
			want:  runnerDecision{Status: claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 50*time.Minute, 0, 0)},
			ready: runsFirst,
		},
		{
			name: "a claimed runner failing: Failed with the reason, its holder told, the claim kept and still timed",
			in:   claimed(status(v1alpha1.RunnerClaimed, firstID, "", ""), 10*time.Second, 0, 60), age: time.Hour, allocs: running(firstID, oom),
			want: runnerDecision{Status: claimed(status(v1alpha1.RunnerFailed, firstID, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."), 10*time.Second, 0, 60),
				Event:          &runnerEvent{Reason: v1alpha1.ReasonOOMKilled, Action: "Observe", Note: "Task main ran out of memory and was killed."},
				ClaimExpiresIn: 50 * time.Second},
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."),
		},
		{
			name: "Failed is final: a new allocation changes nothing",
			in:   status(v1alpha1.RunnerFailed, firstID, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."), age: time.Hour,
			allocs: running(secondID),
			want:   runnerDecision{Status: status(v1alpha1.RunnerFailed, firstID, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed.")},
			ready:  ready(metav1.ConditionFalse, v1alpha1.ReasonOOMKilled, "Task main ran out of memory and was killed."),
		},
		{
			name: "a failed claimed runner past its deadline is deleted",
			in:   claimed(status(v1alpha1.RunnerFailed, firstID, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 is gone from Nomad."), 50*time.Minute, 0, 600),
			age:  time.Hour,
			want: runnerDecision{Status: claimed(status(v1alpha1.RunnerFailed, firstID, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 is gone from Nomad."), 50*time.Minute, 0, 600),
				ClaimExpired: true},
			ready: ready(metav1.ConditionFalse, v1alpha1.ReasonNomadJobLost, "Allocation 11111111 is gone from Nomad."),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := created.Add(tc.age)
			if tc.in.Claim != nil && tc.age != time.Hour {
				t.Fatalf("a claimed runner is an hour old here: claimed() counts back from then")
			}
			o := runnerObservation{Status: tc.in, Generation: 1, JobID: job, Namespace: "default", Created: created, Now: now,
				JobGone: tc.jobGone, Allocations: tc.allocs}
			if got := askWhyUnplaced(o); got != tc.askNomad {
				t.Errorf("askWhyUnplaced = %v, want %v", got, tc.askNomad)
			}
			o.WhyUnplaced = tc.whyUnplaced
			in := tc.in.DeepCopy()

			got := computeRunnerStatus(o)

			if !equality.Semantic.DeepEqual(*in, tc.in) {
				t.Errorf("the observed status was changed:\n%s", diff.Diff(*in, tc.in))
			}
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ReadyCondition)
			if c == nil || len(got.Status.Conditions) != 1 {
				t.Fatalf("conditions %+v, want Ready only", got.Status.Conditions)
			}
			want := tc.ready
			want.ObservedGeneration, want.LastTransitionTime = 1, metav1.NewTime(now)
			if !equality.Semantic.DeepEqual(*c, want) {
				t.Errorf("Ready condition (-want +got):\n%s", diff.Diff(want, *c))
			}
			got.Status.Conditions = nil
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("decision (-want +got):\n%s", diff.Diff(tc.want, got))
			}
		})
	}
}
