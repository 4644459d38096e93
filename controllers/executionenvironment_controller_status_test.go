package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func TestComputeStatus(t *testing.T) {
	waitingForNomad := func(rn *v1alpha1.Runner) { rn.Status.Reason = v1alpha1.ReasonWaitingForNomad }
	looping := CrashLoopStatus{Failures: 4, Hold: 1500 * time.Millisecond, Looping: true}
	cases := []struct {
		name       string
		target     int32
		maxRunners *int32
		runners    []v1alpha1.Runner
		crash      CrashLoopStatus
		err        error

		wantCounts  [4]int32 // idle, claimed, pending, failed
		wantPool    string   // PoolFilled reason
		wantMessage string   // a part of PoolFilled's message
		wantReady   bool
		wantObserve bool
	}{
		{name: "a filled pool is ready", target: 2, runners: pool(idle("i", 2), claimed("c", 1)),
			wantCounts: [4]int32{2, 1, 0, 0}, wantPool: v1alpha1.ReasonAsExpected, wantMessage: "2 of 2 idle runners ready.", wantReady: true, wantObserve: true},
		{name: "a filling pool scales up", target: 3, runners: pool(idle("i", 1), pending("p", 2), runnersIn("", hashNow, "new", 1)),
			wantCounts: [4]int32{1, 0, 3, 0}, wantPool: v1alpha1.ReasonScalingUp, wantMessage: "1 of 3 idle runners ready, 3 pending.", wantObserve: true},
		{name: "a pool above its target scales down", target: 1, runners: idle("i", 3),
			wantCounts: [4]int32{3, 0, 0, 0}, wantPool: v1alpha1.ReasonScalingDown, wantMessage: "3 idle runners, 1 wanted.", wantObserve: true},
		{name: "pending runners Nomad has no room for say so", target: 3,
			runners:    pool(idle("i", 1), runnersIn(v1alpha1.RunnerPending, hashNow, "w", 2, waitingForNomad)),
			wantCounts: [4]int32{1, 0, 2, 0}, wantPool: v1alpha1.ReasonWaitingForNomad, wantMessage: "2 runners wait for Nomad capacity", wantObserve: true},
		{name: "failed runners still held count against the runner limit", target: 2, maxRunners: ptr.To[int32](3),
			runners:    pool(idle("i", 1), claimed("c", 1), runnersIn(v1alpha1.RunnerFailed, hashNow, "fh", 1, heldBy), failed("f", 1)),
			wantCounts: [4]int32{1, 1, 0, 2}, wantPool: v1alpha1.ReasonRunnerLimitReached, wantMessage: "the environment has 3 runners (1 claimed)", wantObserve: true},
		{name: "runners being deleted count nowhere", target: 1, runners: runnersIn(v1alpha1.RunnerIdle, hashNow, "d", 2, beingDeleted),
			wantCounts: [4]int32{0, 0, 0, 0}, wantPool: v1alpha1.ReasonScalingUp, wantObserve: true},
		{name: "a crash loop below the target overrides PoolFilled and Ready", target: 3, runners: pool(idle("i", 1), failed("f", 1)), crash: looping,
			wantCounts: [4]int32{1, 0, 0, 1}, wantPool: v1alpha1.ReasonRunnersCrashLooping,
			wantMessage: "1 of 3 idle runners ready; 4 runners failed unclaimed in a row (see their status.message), next replacement in 2s.", wantObserve: true},
		{name: "a crash loop on a filled pool changes nothing", target: 1, runners: pool(idle("i", 1), failed("f", 1)), crash: looping,
			wantCounts: [4]int32{1, 0, 0, 1}, wantPool: v1alpha1.ReasonAsExpected, wantReady: true, wantObserve: true},
		{name: "free failures are no crash loop", target: 3, runners: failed("f", 2), crash: CrashLoopStatus{Failures: 2},
			wantCounts: [4]int32{0, 0, 0, 2}, wantPool: v1alpha1.ReasonScalingUp, wantObserve: true},
		{name: "a failed pass leaves the observed generation", target: 1, runners: idle("i", 1), err: errors.New("boom"),
			wantCounts: [4]int32{1, 0, 0, 0}, wantPool: v1alpha1.ReasonAsExpected, wantReady: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ee := &v1alpha1.ExecutionEnvironment{
				ObjectMeta: metav1.ObjectMeta{Name: "python", Generation: 3},
				Spec:       v1alpha1.ExecutionEnvironmentSpec{PrewarmingPoolSize: tc.target, MaxRunners: tc.maxRunners},
				Status:     v1alpha1.ExecutionEnvironmentStatus{ObservedGeneration: 2},
			}
			setTemplateCondition(ee, nil)
			setNomadCondition(ee, nil)
			computeStatus(ee, tc.runners, tc.crash, tc.err)

			s := ee.Status
			if got := [4]int32{s.IdleRunners, s.ClaimedRunners, s.PendingRunners, s.FailedRunners}; got != tc.wantCounts {
				t.Errorf("idle, claimed, pending, failed = %v, want %v", got, tc.wantCounts)
			}
			pf := meta.FindStatusCondition(s.Conditions, v1alpha1.PoolFilledCondition)
			if pf.Reason != tc.wantPool || !strings.Contains(pf.Message, tc.wantMessage) {
				t.Errorf("PoolFilled = %s %q, want %s with %q", pf.Reason, pf.Message, tc.wantPool, tc.wantMessage)
			}
			ready := meta.FindStatusCondition(s.Conditions, v1alpha1.ReadyCondition)
			if ready.Status == metav1.ConditionTrue != tc.wantReady {
				t.Errorf("Ready = %s, want ready %v", ready.Status, tc.wantReady)
			}
			if !tc.wantReady && (ready.Reason != pf.Reason || ready.Message != pf.Message) {
				t.Errorf("Ready = %s %q, want PoolFilled's %s %q", ready.Reason, ready.Message, pf.Reason, pf.Message)
			}
			if got := s.ObservedGeneration == ee.Generation; got != tc.wantObserve {
				t.Errorf("observedGeneration = %d at generation %d, want stamped %v", s.ObservedGeneration, ee.Generation, tc.wantObserve)
			}
			if s.Selector != "execution.nomadrunner.io/environment=python" {
				t.Errorf("selector = %q", s.Selector)
			}
		})
	}
}

func TestCrashLoopStarted(t *testing.T) {
	status := func(reason string) *v1alpha1.ExecutionEnvironmentStatus {
		s := &v1alpha1.ExecutionEnvironmentStatus{}
		if reason != "" {
			meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: v1alpha1.PoolFilledCondition, Status: metav1.ConditionFalse, Reason: reason, Message: "m " + reason})
		}
		return s
	}
	crash := v1alpha1.ReasonRunnersCrashLooping
	cases := []struct {
		name          string
		before, after string
		want          bool
	}{
		{"a crash loop starts on a new environment", "", crash, true},
		{"a crash loop starts on a pool that was scaling up", v1alpha1.ReasonScalingUp, crash, true},
		{"a crash loop that goes on is told once", crash, crash, false},
		{"a crash loop that ended says nothing", crash, v1alpha1.ReasonScalingUp, false},
		{"no crash loop says nothing", v1alpha1.ReasonScalingUp, v1alpha1.ReasonAsExpected, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := crashLoopStarted(status(tc.before), status(tc.after))
			if ok != tc.want || (ok && msg != "m "+crash) {
				t.Errorf("crashLoopStarted() = %q, %v; want %v with PoolFilled's message", msg, ok, tc.want)
			}
		})
	}
}
