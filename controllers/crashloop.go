package controllers

import (
	"k8s.io/utils/clock"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Crash-loop backoff defaults: the first failures of a streak are replaced at
// once (a pool of N may lose N runners to one Nomad hiccup), then each further
// replacement waits twice as long as the last, up to the cap. A streak ends when
// no runner failed for resetAfter beyond the current delay.
const (
	crashLoopBaseDelay  = time.Second
	crashLoopMaxDelay   = 5 * time.Minute
	crashLoopResetAfter = 30 * time.Second
)

// CrashLoopBackoff rate-limits the replacement of failed, unclaimed runners per
// environment, so a template whose task exits at once cannot make the operator
// register jobs without bound (the churn loop). It lives in memory: a restarted
// operator starts a new streak, which costs at most a few early replacements.
type CrashLoopBackoff struct {
	// Base, Max and ResetAfter tune the backoff (zero: the defaults above).
	Base, Max, ResetAfter time.Duration

	mu    sync.Mutex
	clock clock.PassiveClock
	state map[types.NamespacedName]*crashStreak
}

type crashStreak struct {
	seen     map[string]bool // failed runners already counted
	failures int
	last     time.Time // when the latest failure was counted
}

// NewCrashLoopBackoff returns a backoff with the default tuning.
func NewCrashLoopBackoff(c clock.PassiveClock) *CrashLoopBackoff {
	return &CrashLoopBackoff{clock: c, state: map[types.NamespacedName]*crashStreak{}}
}

// CrashLoopStatus is what an environment's pass learns from the backoff.
type CrashLoopStatus struct {
	// Failures counts the runners that failed unclaimed in the current streak.
	Failures int
	// Hold is how long creations must still wait (0: create now).
	Hold time.Duration
	// Looping is true once the streak exceeds the free failures.
	Looping bool
}

// Observe counts the failed, unclaimed runners of env not seen before (a
// runner is counted once however many passes see it), with free failures
// allowed before the backoff starts, and says whether creations must wait.
func (b *CrashLoopBackoff) Observe(env types.NamespacedName, failed []string, free int) CrashLoopStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	s := b.state[env]
	if s != nil && len(failed) == 0 && now.Sub(s.last) > b.delay(s.failures, free)+b.resetAfter() {
		delete(b.state, env)
		s = nil
	}
	for _, name := range failed {
		if s == nil {
			s = &crashStreak{seen: map[string]bool{}}
			b.state[env] = s
		}
		if !s.seen[name] {
			s.seen[name] = true
			s.failures++
			s.last = now
		}
	}
	if s == nil {
		return CrashLoopStatus{}
	}
	st := CrashLoopStatus{Failures: s.failures, Looping: s.failures > free}
	if d := b.delay(s.failures, free) - now.Sub(s.last); d > 0 {
		st.Hold = d
	}
	return st
}

// Forget drops an environment (it was deleted).
func (b *CrashLoopBackoff) Forget(env types.NamespacedName) {
	b.mu.Lock()
	delete(b.state, env)
	b.mu.Unlock()
}

// delay is the wait after the latest failure of a streak of n failures:
// 0 for the first free ones, then Base, 2·Base, 4·Base, ... up to Max.
func (b *CrashLoopBackoff) delay(n, free int) time.Duration {
	if n <= free {
		return 0
	}
	base, maxDelay := b.Base, b.Max
	if base <= 0 {
		base = crashLoopBaseDelay
	}
	if maxDelay <= 0 {
		maxDelay = crashLoopMaxDelay
	}
	d := base
	for i := free + 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

func (b *CrashLoopBackoff) resetAfter() time.Duration {
	if b.ResetAfter > 0 {
		return b.ResetAfter
	}
	return crashLoopResetAfter
}
