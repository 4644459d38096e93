package controllers

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// runners makes n runners named prefix-0.. with increasing creation times.
func runners(prefix string, n int) []PoolRunner {
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var rs []PoolRunner
	for i := range n {
		rs = append(rs, PoolRunner{Name: fmt.Sprintf("%s-%d", prefix, i), Created: base.Add(time.Duration(i) * time.Second)})
	}
	return rs
}

func TestComputePoolAction(t *testing.T) {
	cases := []struct {
		name string
		in   PoolInput
		want PoolAction
	}{
		{"empty pool fills to target", PoolInput{Target: 3}, PoolAction{Create: 3}},
		{"claims at the runner limit stop the refill", PoolInput{Target: 3, Claimed: 10, MaxRunners: 10}, PoolAction{}},
		{"the refill stops at the runner limit", PoolInput{Target: 3, Idle: runners("i", 1), Claimed: 7, MaxRunners: 9}, PoolAction{Create: 1}},
		{"claims above the limit (it was lowered) create nothing and delete nothing claimed",
			PoolInput{Target: 3, Idle: runners("i", 2), Claimed: 12, MaxRunners: 10}, PoolAction{}},
		{"a pending runner counts against the limit", PoolInput{Target: 3, Pending: runners("p", 1), Claimed: 8, MaxRunners: 10}, PoolAction{Create: 1}},
		{"deleted failed runners make room", PoolInput{Target: 2, FailedUnclaimed: runners("f", 2), Claimed: 8, MaxRunners: 10},
			PoolAction{Delete: []string{"f-1", "f-0"}, Create: 2}},
		{"full pool does nothing", PoolInput{Target: 3, Idle: runners("i", 3)}, PoolAction{}},
		{"held creations still delete failed runners and report the missing ones as partial",
			PoolInput{Target: 2, FailedUnclaimed: runners("f", 2), HoldCreates: true},
			PoolAction{Delete: []string{"f-1", "f-0"}, Partial: true}},
		{"held creations on a full pool are not partial", PoolInput{Target: 1, Idle: runners("i", 1), HoldCreates: true}, PoolAction{}},
		{"pending runners count as up", PoolInput{Target: 3, Idle: runners("i", 1), Pending: runners("p", 2)}, PoolAction{}},
		{"in-flight creates count as up: a stale cache never over-creates",
			PoolInput{Target: 3, Idle: runners("i", 1), InFlightCreates: 2}, PoolAction{}},
		{"claimed runners neither count nor get touched",
			PoolInput{Target: 2, Idle: runners("i", 2), Claimed: 5}, PoolAction{}},
		{"a claim refills the pool", PoolInput{Target: 3, Idle: runners("i", 2), Claimed: 1}, PoolAction{Create: 1}},
		{"scale up is capped per pass", PoolInput{Target: 100, Idle: runners("i", 10), MaxCreatesPerPass: 20},
			PoolAction{Create: 20, Partial: true}},
		{"scale down deletes pending before idle, newest first",
			PoolInput{Target: 2, Idle: runners("i", 3), Pending: runners("p", 2)},
			PoolAction{Delete: []string{"p-1", "p-0", "i-2"}}},
		{"scale to zero deletes every unclaimed runner",
			PoolInput{Target: 0, Idle: runners("i", 2), Pending: runners("p", 1), Claimed: 3},
			PoolAction{Delete: []string{"p-0", "i-1", "i-0"}}},
		{"scale down with creates in flight deletes only what the cache shows",
			PoolInput{Target: 0, Idle: runners("i", 1), InFlightCreates: 2},
			PoolAction{Delete: []string{"i-0"}}},
		{"failed unclaimed runners are deleted and replaced",
			PoolInput{Target: 3, Idle: runners("i", 2), FailedUnclaimed: runners("f", 1)},
			PoolAction{Create: 1, Delete: []string{"f-0"}}},
		{"rollout starts with a surge and keeps every stale idle runner",
			PoolInput{Target: 3, StaleIdle: runners("s", 3), MaxSurge: 1},
			PoolAction{Create: 1}},
		{"rollout waits while the surge is pending",
			PoolInput{Target: 3, StaleIdle: runners("s", 3), Pending: runners("p", 1), MaxSurge: 1},
			PoolAction{}},
		{"rollout deletes one stale idle runner per new idle one and surges again",
			PoolInput{Target: 3, StaleIdle: runners("s", 3), Idle: runners("i", 1), MaxSurge: 1},
			PoolAction{Create: 1, Delete: []string{"s-2"}}},
		{"a wider surge replaces faster",
			PoolInput{Target: 4, StaleIdle: runners("s", 4), MaxSurge: 2},
			PoolAction{Create: 2}},
		{"rollout never touches claimed runners and ends with the last stale one",
			PoolInput{Target: 2, StaleIdle: runners("s", 1), Idle: runners("i", 2), Claimed: 4, MaxSurge: 1},
			PoolAction{Delete: []string{"s-0"}}},
		{"stale pending runners are deleted at once and replaced",
			PoolInput{Target: 2, StalePending: runners("sp", 2), MaxSurge: 1},
			PoolAction{Create: 2, Delete: []string{"sp-1", "sp-0"}}},
		{"scale down during a rollout removes stale idle runners first",
			PoolInput{Target: 1, StaleIdle: runners("s", 3), MaxSurge: 1},
			PoolAction{Create: 1, Delete: []string{"s-2", "s-1"}}},
		{"a surge of zero is taken as one, so a rollout can start",
			PoolInput{Target: 2, StaleIdle: runners("s", 2), MaxSurge: 0},
			PoolAction{Create: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputePoolAction(tc.in)
			if got.Create != tc.want.Create || got.Partial != tc.want.Partial || !slices.Equal(got.Delete, tc.want.Delete) {
				t.Errorf("ComputePoolAction() = %+v, want %+v", got, tc.want)
			}
		})
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
			in := PoolInput{Target: tc.target, StaleIdle: runners("s", tc.stale), Idle: runners("i", tc.idle), MaxSurge: tc.surge}
			filled := len(in.Idle)+len(in.StaleIdle) >= tc.target
			next := 0
			for pass := range 100 {
				act := ComputePoolAction(in)
				if act.Create == 0 && len(act.Delete) == 0 && len(in.Pending) == 0 {
					if len(in.Idle) != tc.target || len(in.StaleIdle) != 0 {
						t.Fatalf("pass %d: fixed point with %d idle, %d stale; want %d current idle", pass, len(in.Idle), len(in.StaleIdle), tc.target)
					}
					return
				}
				// Pending runners from the last pass are idle now; this pass's creations are pending.
				in.Idle = append(in.Idle, in.Pending...)
				in.Pending = nil
				in.Idle = remove(in.Idle, act.Delete)
				in.StaleIdle = remove(in.StaleIdle, act.Delete)
				for range act.Create {
					in.Pending = append(in.Pending, PoolRunner{Name: fmt.Sprintf("n-%d", next), Created: time.Unix(int64(next), 0)})
					next++
				}
				total := len(in.Idle) + len(in.StaleIdle) + len(in.Pending)
				if total > max(tc.target+max(tc.surge, 1), tc.idle+tc.stale) {
					t.Fatalf("pass %d: %d runners exist, above target %d + surge %d", pass, total, tc.target, tc.surge)
				}
				if filled && len(in.Idle)+len(in.StaleIdle) < tc.target {
					t.Fatalf("pass %d: only %d idle, below target %d", pass, len(in.Idle)+len(in.StaleIdle), tc.target)
				}
			}
			t.Fatal("no fixed point after 100 passes")
		})
	}
}

func remove(rs []PoolRunner, names []string) []PoolRunner {
	return slices.DeleteFunc(rs, func(r PoolRunner) bool { return slices.Contains(names, r.Name) })
}
