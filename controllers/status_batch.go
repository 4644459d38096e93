package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// StatusBatcher spaces out an environment's status writes that only change
// counts. While a pool fills or claims drain it, every runner that changes
// phase changes the counts: one status write per runner per phase, each an API
// write that competes with the runners' own. A count-only change is written at
// most once per Interval; anything a user or tool waits on (a condition's
// status or reason, observedGeneration, templateHash) is written at once.
type StatusBatcher struct {
	Interval time.Duration
	Clock    clock.PassiveClock

	mu   sync.Mutex
	last map[types.UID]time.Time
}

// NewStatusBatcher returns a batcher writing count-only changes at most once
// per interval (0: never holds a write back).
func NewStatusBatcher(interval time.Duration, c clock.PassiveClock) *StatusBatcher {
	return &StatusBatcher{Interval: interval, Clock: c, last: map[types.UID]time.Time{}}
}

// Hold says how long to wait before writing the change from before to after;
// 0 means write now.
func (b *StatusBatcher) Hold(uid types.UID, before, after *v1alpha1.ExecutionEnvironmentStatus) time.Duration {
	if b == nil || b.Interval <= 0 || !countsOnly(before, after) {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	last, ok := b.last[uid]
	if !ok {
		return 0
	}
	return max(0, b.Interval-b.Clock.Since(last))
}

// Wrote records that the environment's status was just written.
func (b *StatusBatcher) Wrote(uid types.UID) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.last[uid] = b.Clock.Now()
	b.mu.Unlock()
}

// Forget drops a deleted environment.
func (b *StatusBatcher) Forget(uid types.UID) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.last, uid)
	b.mu.Unlock()
}

// countsOnly is true when after differs from before in the runner counts and
// the conditions' messages only.
func countsOnly(before, after *v1alpha1.ExecutionEnvironmentStatus) bool {
	strip := func(s *v1alpha1.ExecutionEnvironmentStatus) v1alpha1.ExecutionEnvironmentStatus {
		c := *s.DeepCopy()
		c.IdleRunners, c.ClaimedRunners, c.PendingRunners, c.FailedRunners = 0, 0, 0, 0
		for i := range c.Conditions {
			c.Conditions[i].Message = ""
		}
		return c
	}
	return equality.Semantic.DeepEqual(strip(before), strip(after))
}
