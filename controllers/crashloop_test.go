package controllers

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestCrashLoopBackoff runs one backoff through a table of passes, in order:
// each may let time pass, then observes the failed runners of an environment.
func TestCrashLoopBackoff(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	b := NewCrashLoopBackoff(funcClock(func() time.Time { return now }))
	env := types.NamespacedName{Namespace: "ns", Name: "python"}
	other := types.NamespacedName{Namespace: "ns", Name: "ruby"}
	var many []string
	for i := range 30 {
		many = append(many, fmt.Sprintf("m-%d", i))
	}
	steps := []struct {
		name   string
		wait   time.Duration
		env    types.NamespacedName
		failed []string
		free   int
		forget bool // Forget env before observing
		want   CrashLoopStatus
	}{
		{name: "no failure", env: env, free: 2, want: CrashLoopStatus{}},
		// A pool of 2 may lose both runners to one hiccup: replaced at once.
		{name: "two free failures", env: env, failed: []string{"a", "b"}, free: 2, want: CrashLoopStatus{Failures: 2}},
		{name: "the same failed runners seen again count once", env: env, failed: []string{"a", "b"}, free: 2, want: CrashLoopStatus{Failures: 2}},
		{name: "the third failure waits the base delay", env: env, failed: []string{"c"}, free: 2,
			want: CrashLoopStatus{Failures: 3, Hold: time.Second, Looping: true}},
		{name: "time passes", wait: 400 * time.Millisecond, env: env, free: 2,
			want: CrashLoopStatus{Failures: 3, Hold: 600 * time.Millisecond, Looping: true}},
		{name: "then creations go ahead", wait: time.Second, env: env, free: 2, want: CrashLoopStatus{Failures: 3, Looping: true}},
		{name: "the fourth failure doubles the delay", env: env, failed: []string{"d"}, free: 2,
			want: CrashLoopStatus{Failures: 4, Hold: 2 * time.Second, Looping: true}},
		{name: "the fifth doubles it again", env: env, failed: []string{"e"}, free: 2,
			want: CrashLoopStatus{Failures: 5, Hold: 4 * time.Second, Looping: true}},
		{name: "other environments are independent", env: other, failed: []string{"x"}, free: 1, want: CrashLoopStatus{Failures: 1}},
		{name: "the delay is capped", env: env, failed: many, free: 2,
			want: CrashLoopStatus{Failures: 35, Hold: crashLoopMaxDelay, Looping: true}},
		{name: "a quiet period beyond the delay plus ResetAfter ends the streak",
			wait: crashLoopMaxDelay + crashLoopResetAfter + time.Second, env: env, free: 2, want: CrashLoopStatus{}},
		{name: "a new streak starts free", env: env, failed: []string{"z"}, free: 2, want: CrashLoopStatus{Failures: 1}},
		{name: "a forgotten environment starts over", env: env, free: 2, forget: true, want: CrashLoopStatus{}},
	}
	for _, s := range steps {
		now = now.Add(s.wait)
		if s.forget {
			b.Forget(s.env)
		}
		if got := b.Observe(s.env, s.failed, s.free); got != s.want {
			t.Errorf("%s: Observe() = %+v, want %+v", s.name, got, s.want)
		}
	}
}

func TestCrashLoopDelay(t *testing.T) {
	cases := []struct {
		name           string
		base, max      time.Duration
		failures, free int
		want           time.Duration
	}{
		{name: "free failures wait nothing", failures: 2, free: 2, want: 0},
		{name: "the first failure beyond the free ones waits the base", failures: 3, free: 2, want: crashLoopBaseDelay},
		{name: "each further failure doubles", failures: 6, free: 2, want: 8 * crashLoopBaseDelay},
		{name: "up to the cap", failures: 100, free: 2, want: crashLoopMaxDelay},
		{name: "a tuned base and cap", base: 10 * time.Millisecond, max: 50 * time.Millisecond, failures: 4, free: 1, want: 40 * time.Millisecond},
		{name: "a tuned cap holds", base: 10 * time.Millisecond, max: 50 * time.Millisecond, failures: 5, free: 1, want: 50 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &CrashLoopBackoff{Base: tc.base, Max: tc.max}
			if got := b.delay(tc.failures, tc.free); got != tc.want {
				t.Errorf("delay(%d, %d) = %s, want %s", tc.failures, tc.free, got, tc.want)
			}
		})
	}
}
