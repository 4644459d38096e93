package runnerphase

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func runner(phase v1alpha1.RunnerPhase, opts ...func(*v1alpha1.Runner)) v1alpha1.Runner {
	rn := v1alpha1.Runner{Status: v1alpha1.RunnerStatus{Phase: phase}}
	for _, o := range opts {
		o(&rn)
	}
	return rn
}

func held(rn *v1alpha1.Runner) { rn.Status.Claim = &v1alpha1.RunnerClaim{Holder: "h"} }

func deleting(rn *v1alpha1.Runner) {
	now := metav1.Now()
	rn.DeletionTimestamp = &now
}

func waiting(rn *v1alpha1.Runner) { rn.Status.Reason = v1alpha1.ReasonWaitingForNomad }

func TestCountByPhase(t *testing.T) {
	cases := []struct {
		name    string
		runners []v1alpha1.Runner
		want    Counts
	}{
		{"no runners", nil, Counts{}},
		{"one of each phase",
			[]v1alpha1.Runner{runner(v1alpha1.RunnerPending), runner(v1alpha1.RunnerIdle), runner(v1alpha1.RunnerClaimed, held), runner(v1alpha1.RunnerFailed)},
			Counts{Pending: 1, Idle: 1, Claimed: 1, Failed: 1}},
		{"a runner without a phase yet is pending", []v1alpha1.Runner{runner("")}, Counts{Pending: 1}},
		{"runners being deleted count nowhere",
			[]v1alpha1.Runner{runner(v1alpha1.RunnerIdle, deleting), runner(v1alpha1.RunnerClaimed, held, deleting), runner("", deleting), runner(v1alpha1.RunnerFailed, held, deleting)},
			Counts{}},
		{"a failed runner its holder has not released is failed and held",
			[]v1alpha1.Runner{runner(v1alpha1.RunnerFailed, held), runner(v1alpha1.RunnerFailed)},
			Counts{Failed: 2, FailedHeld: 1}},
		{"pending runners Nomad has no room for are counted apart too",
			[]v1alpha1.Runner{runner(v1alpha1.RunnerPending, waiting), runner("", waiting), runner(v1alpha1.RunnerPending)},
			Counts{Pending: 3, WaitingForNomad: 2}},
		{"the reason of a runner no longer pending is not waiting",
			[]v1alpha1.Runner{runner(v1alpha1.RunnerFailed, waiting)},
			Counts{Failed: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CountByPhase(tc.runners); got != tc.want {
				t.Errorf("CountByPhase() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCountsTotals(t *testing.T) {
	c := Counts{Pending: 2, Idle: 3, Claimed: 4, Failed: 5, FailedHeld: 1, WaitingForNomad: 1}
	if got := c.Held(); got != 5 {
		t.Errorf("Held() = %d, want 5 (claimed and failed held)", got)
	}
	if got := c.AgainstLimit(); got != 10 {
		t.Errorf("AgainstLimit() = %d, want 10 (all but the failed nobody holds)", got)
	}
	for _, p := range Phases {
		want := map[v1alpha1.RunnerPhase]int{v1alpha1.RunnerPending: 2, v1alpha1.RunnerIdle: 3, v1alpha1.RunnerClaimed: 4, v1alpha1.RunnerFailed: 5}[p]
		if got := c.InPhase(p); got != want {
			t.Errorf("InPhase(%s) = %d, want %d", p, got, want)
		}
	}
}
