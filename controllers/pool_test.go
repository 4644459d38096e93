package controllers

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// The template hashes of the pool tests: runners of "old" are stale.
const (
	hashNow = "now"
	hashOld = "old"
)

var poolTestStart = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// runnersIn makes n runners named prefix-0.. in phase, of template hash, with
// increasing creation times, each changed by opts.
func runnersIn(phase v1alpha1.RunnerPhase, hash, prefix string, n int, opts ...func(*v1alpha1.Runner)) []v1alpha1.Runner {
	var rs []v1alpha1.Runner
	for i := range n {
		rn := v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), CreationTimestamp: metav1.NewTime(poolTestStart.Add(time.Duration(i) * time.Second))},
			Spec:       v1alpha1.RunnerSpec{TemplateHash: hash},
			Status:     v1alpha1.RunnerStatus{Phase: phase},
		}
		for _, o := range opts {
			o(&rn)
		}
		rs = append(rs, rn)
	}
	return rs
}

func idle(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerIdle, hashNow, prefix, n)
}

func pending(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerPending, hashNow, prefix, n)
}

func staleIdle(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerIdle, hashOld, prefix, n)
}

func stalePending(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerPending, hashOld, prefix, n)
}

func failed(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerFailed, hashNow, prefix, n)
}

// claimed runners are of the old hash: a rollout never touches them either.
func claimed(prefix string, n int) []v1alpha1.Runner {
	return runnersIn(v1alpha1.RunnerClaimed, hashOld, prefix, n, heldBy)
}

func heldBy(rn *v1alpha1.Runner) { rn.Status.Claim = &v1alpha1.RunnerClaim{Holder: "someone"} }

func beingDeleted(rn *v1alpha1.Runner) {
	t := metav1.NewTime(poolTestStart)
	rn.DeletionTimestamp = &t
}

func pool(groups ...[]v1alpha1.Runner) []v1alpha1.Runner { return slices.Concat(groups...) }

func names(rs []*v1alpha1.Runner) []string {
	var out []string
	for _, rn := range rs {
		out = append(out, rn.Name)
	}
	return out
}

func TestComputePoolAction(t *testing.T) {
	cases := []struct {
		name       string
		in         PoolInput
		wantCreate int
		wantDelete []string
		wantPart   bool
	}{
		{name: "empty pool fills to target", in: PoolInput{Target: 3}, wantCreate: 3},
		{name: "claims at the runner limit stop the refill", in: PoolInput{Target: 3, Runners: claimed("c", 10), MaxRunners: 10}},
		{name: "the refill stops at the runner limit", in: PoolInput{Target: 3, Runners: pool(idle("i", 1), claimed("c", 7)), MaxRunners: 9}, wantCreate: 1},
		{name: "claims above the limit (it was lowered) create nothing and delete nothing claimed",
			in: PoolInput{Target: 3, Runners: pool(idle("i", 2), claimed("c", 12)), MaxRunners: 10}},
		{name: "a pending runner counts against the limit", in: PoolInput{Target: 3, Runners: pool(pending("p", 1), claimed("c", 8)), MaxRunners: 10}, wantCreate: 1},
		{name: "deleted failed runners make room", in: PoolInput{Target: 2, Runners: pool(failed("f", 2), claimed("c", 8)), MaxRunners: 10},
			wantDelete: []string{"f-1", "f-0"}, wantCreate: 2},
		{name: "full pool does nothing", in: PoolInput{Target: 3, Runners: idle("i", 3)}},
		{name: "held creations still delete failed runners and report the missing ones as partial",
			in:         PoolInput{Target: 2, Runners: failed("f", 2), HoldCreates: true},
			wantDelete: []string{"f-1", "f-0"}, wantPart: true},
		{name: "held creations on a full pool are not partial", in: PoolInput{Target: 1, Runners: idle("i", 1), HoldCreates: true}},
		{name: "pending runners count as up", in: PoolInput{Target: 3, Runners: pool(idle("i", 1), pending("p", 2))}},
		{name: "in-flight creates count as up: a stale cache never over-creates",
			in: PoolInput{Target: 3, Runners: idle("i", 1), InFlightCreates: 2}},
		{name: "claimed runners neither count nor get touched",
			in: PoolInput{Target: 2, Runners: pool(idle("i", 2), claimed("c", 5))}},
		{name: "a claim refills the pool", in: PoolInput{Target: 3, Runners: pool(idle("i", 2), claimed("c", 1))}, wantCreate: 1},
		{name: "scale up is capped per pass", in: PoolInput{Target: 100, Runners: idle("i", 10), MaxCreatesPerPass: 20},
			wantCreate: 20, wantPart: true},
		{name: "scale down deletes pending before idle, newest first",
			in:         PoolInput{Target: 2, Runners: pool(idle("i", 3), pending("p", 2))},
			wantDelete: []string{"p-1", "p-0", "i-2"}},
		{name: "scale to zero deletes every unclaimed runner",
			in:         PoolInput{Target: 0, Runners: pool(idle("i", 2), pending("p", 1), claimed("c", 3))},
			wantDelete: []string{"p-0", "i-1", "i-0"}},
		{name: "scale down with creates in flight deletes only what the cache shows",
			in:         PoolInput{Target: 0, Runners: idle("i", 1), InFlightCreates: 2},
			wantDelete: []string{"i-0"}},
		{name: "failed unclaimed runners are deleted and replaced",
			in:         PoolInput{Target: 3, Runners: pool(idle("i", 2), failed("f", 1))},
			wantCreate: 1, wantDelete: []string{"f-0"}},
		{name: "rollout starts with a surge and keeps every stale idle runner",
			in: PoolInput{Target: 3, Runners: staleIdle("s", 3), MaxSurge: 1}, wantCreate: 1},
		{name: "rollout waits while the surge is pending",
			in: PoolInput{Target: 3, Runners: pool(staleIdle("s", 3), pending("p", 1)), MaxSurge: 1}},
		{name: "rollout deletes one stale idle runner per new idle one and surges again",
			in:         PoolInput{Target: 3, Runners: pool(staleIdle("s", 3), idle("i", 1)), MaxSurge: 1},
			wantCreate: 1, wantDelete: []string{"s-2"}},
		{name: "a wider surge replaces faster",
			in: PoolInput{Target: 4, Runners: staleIdle("s", 4), MaxSurge: 2}, wantCreate: 2},
		{name: "rollout never touches claimed runners and ends with the last stale one",
			in:         PoolInput{Target: 2, Runners: pool(staleIdle("s", 1), idle("i", 2), claimed("c", 4)), MaxSurge: 1},
			wantDelete: []string{"s-0"}},
		{name: "stale pending runners are deleted at once and replaced",
			in:         PoolInput{Target: 2, Runners: stalePending("sp", 2), MaxSurge: 1},
			wantCreate: 2, wantDelete: []string{"sp-1", "sp-0"}},
		{name: "scale down during a rollout removes stale idle runners first",
			in:         PoolInput{Target: 1, Runners: staleIdle("s", 3), MaxSurge: 1},
			wantCreate: 1, wantDelete: []string{"s-2", "s-1"}},
		{name: "a surge of zero is taken as one, so a rollout can start",
			in: PoolInput{Target: 2, Runners: staleIdle("s", 2), MaxSurge: 0}, wantCreate: 1},

		// How the runners are sorted.
		{name: "a runner without a phase yet is current pending",
			in: PoolInput{Target: 2, Runners: pool(idle("i", 1), runnersIn("", hashNow, "new", 1))}},
		{name: "a runner without a phase of the old hash is stale pending and goes",
			in:         PoolInput{Target: 1, Runners: pool(idle("i", 1), runnersIn("", hashOld, "new", 1))},
			wantDelete: []string{"new-0"}},
		{name: "runners being deleted count nowhere and are not deleted again",
			in:         PoolInput{Target: 2, Runners: pool(idle("i", 1), runnersIn(v1alpha1.RunnerIdle, hashNow, "d", 2, beingDeleted), runnersIn(v1alpha1.RunnerFailed, hashNow, "df", 1, beingDeleted))},
			wantCreate: 1},
		{name: "runners this operator deleted count nowhere while the cache shows them alive",
			in:         PoolInput{Target: 2, Runners: pool(idle("i", 3), failed("f", 1)), Deleting: map[string]bool{"i-2": true, "i-1": true, "f-0": true}},
			wantCreate: 1},
		{name: "a failed runner its holder has not released is neither deleted nor replaced beyond the limit",
			in:         PoolInput{Target: 2, Runners: pool(runnersIn(v1alpha1.RunnerFailed, hashNow, "fh", 2, heldBy), failed("f", 1)), MaxRunners: 3},
			wantCreate: 1, wantDelete: []string{"f-0"}},
		{name: "a claimed runner of the current hash is never deleted on a scale to zero",
			in:         PoolInput{Target: 0, Runners: pool(runnersIn(v1alpha1.RunnerClaimed, hashNow, "c", 2, heldBy), idle("i", 1))},
			wantDelete: []string{"i-0"}},
		{name: "runners are deleted newest first whatever order the cache lists them in",
			in:         PoolInput{Target: 1, Runners: pool(idle("i", 4)[2:], idle("i", 4)[:2])},
			wantDelete: []string{"i-3", "i-2", "i-1"}},
		{name: "runners created in the same second go by name",
			in:         PoolInput{Target: 0, Runners: pool(idle("b", 1), idle("a", 1), idle("c", 1))},
			wantDelete: []string{"a-0", "b-0", "c-0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Hash = hashNow
			got := ComputePoolAction(tc.in)
			if got.Create != tc.wantCreate || got.Partial != tc.wantPart || !slices.Equal(names(got.Delete), tc.wantDelete) {
				t.Errorf("ComputePoolAction() = {Create:%d Delete:%v Partial:%v}, want {Create:%d Delete:%v Partial:%v}",
					got.Create, names(got.Delete), got.Partial, tc.wantCreate, tc.wantDelete, tc.wantPart)
			}
		})
	}
}

func TestPoolInputFailedUnclaimed(t *testing.T) {
	in := PoolInput{
		Hash: hashNow,
		Runners: pool(idle("i", 1), failed("f", 2), runnersIn(v1alpha1.RunnerFailed, hashOld, "old", 1),
			runnersIn(v1alpha1.RunnerFailed, hashNow, "held", 1, heldBy), runnersIn(v1alpha1.RunnerFailed, hashNow, "gone", 1, beingDeleted)),
		Deleting: map[string]bool{"f-1": true},
	}
	// Of any hash; not those held, being deleted or deleted by this operator.
	if got, want := in.FailedUnclaimed(), []string{"f-0", "old-0"}; !slices.Equal(got, want) {
		t.Errorf("FailedUnclaimed() = %v, want %v", got, want)
	}
}

// TestComputePoolActionConverges drives the maths to a fixed point, with every
// created runner turning idle one pass later, and checks the invariants a user
// relies on at every step: never more than target+surge runners, never fewer
// idle than the target once filled, and an end state of exactly target current
// idle runners.
func TestComputePoolActionConverges(t *testing.T) {
	for _, tc := range []struct{ target, stale, idle, surge int }{
		{3, 3, 0, 1}, {5, 0, 9, 1}, {6, 2, 1, 2}, {10, 10, 0, 3}, {0, 4, 4, 1}, {1, 0, 0, 1},
	} {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			in := PoolInput{Target: tc.target, Hash: hashNow, Runners: pool(staleIdle("s", tc.stale), idle("i", tc.idle)), MaxSurge: tc.surge}
			count := func(phase v1alpha1.RunnerPhase, hash string) int {
				n := 0
				for _, rn := range in.Runners {
					if rn.Status.Phase == phase && rn.Spec.TemplateHash == hash {
						n++
					}
				}
				return n
			}
			filled := tc.idle+tc.stale >= tc.target
			next := 0
			for pass := range 100 {
				act := ComputePoolAction(in)
				if act.Create == 0 && len(act.Delete) == 0 && count(v1alpha1.RunnerPending, hashNow) == 0 {
					if count(v1alpha1.RunnerIdle, hashNow) != tc.target || count(v1alpha1.RunnerIdle, hashOld) != 0 {
						t.Fatalf("pass %d: fixed point with %d idle, %d stale; want %d current idle",
							pass, count(v1alpha1.RunnerIdle, hashNow), count(v1alpha1.RunnerIdle, hashOld), tc.target)
					}
					return
				}
				// Pending runners from the last pass are idle now; this pass's creations are pending.
				deleted := names(act.Delete)
				in.Runners = slices.DeleteFunc(in.Runners, func(rn v1alpha1.Runner) bool { return slices.Contains(deleted, rn.Name) })
				for i := range in.Runners {
					in.Runners[i].Status.Phase = v1alpha1.RunnerIdle
				}
				for range act.Create {
					in.Runners = append(in.Runners, runnersIn(v1alpha1.RunnerPending, hashNow, fmt.Sprintf("n%d", next), 1)...)
					next++
				}
				if total := len(in.Runners); total > max(tc.target+max(tc.surge, 1), tc.idle+tc.stale) {
					t.Fatalf("pass %d: %d runners exist, above target %d + surge %d", pass, total, tc.target, tc.surge)
				}
				if idle := count(v1alpha1.RunnerIdle, hashNow) + count(v1alpha1.RunnerIdle, hashOld); filled && idle < tc.target {
					t.Fatalf("pass %d: only %d idle, below target %d", pass, idle, tc.target)
				}
			}
			t.Fatal("no fixed point after 100 passes")
		})
	}
}
