package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestCrashLoopBackoff(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	b := NewCrashLoopBackoff(func() time.Time { return now })
	env := types.NamespacedName{Namespace: "ns", Name: "python"}
	other := types.NamespacedName{Namespace: "ns", Name: "ruby"}
	check := func(step string, got CrashLoopStatus, failures int, hold time.Duration, looping bool) {
		t.Helper()
		if got.Failures != failures || got.Hold != hold || got.Looping != looping {
			t.Errorf("%s: got %+v, want failures %d hold %s looping %v", step, got, failures, hold, looping)
		}
	}

	check("no failure", b.Observe(env, nil, 2), 0, 0, false)
	// Two free failures (a pool of 2 may lose both to one hiccup): replaced at once.
	check("two free failures", b.Observe(env, []string{"a", "b"}, 2), 2, 0, false)
	// The same failed runners seen again in later passes count once.
	check("seen again", b.Observe(env, []string{"a", "b"}, 2), 2, 0, false)
	check("third failure waits the base delay", b.Observe(env, []string{"c"}, 2), 3, time.Second, true)
	now = now.Add(400 * time.Millisecond)
	check("time passes", b.Observe(env, nil, 2), 3, 600*time.Millisecond, true)
	now = now.Add(time.Second)
	check("then creates", b.Observe(env, nil, 2), 3, 0, true)
	check("fourth failure doubles", b.Observe(env, []string{"d"}, 2), 4, 2*time.Second, true)
	check("fifth doubles again", b.Observe(env, []string{"e"}, 2), 5, 4*time.Second, true)
	check("other environments are independent", b.Observe(other, []string{"x"}, 1), 1, 0, false)

	// The delay is capped.
	var last CrashLoopStatus
	for i := range 30 {
		last = b.Observe(env, []string{string(rune('f' + i))}, 2)
	}
	check("capped", last, 35, crashLoopMaxDelay, true)

	// A quiet period beyond the delay plus ResetAfter ends the streak.
	now = now.Add(crashLoopMaxDelay + crashLoopResetAfter + time.Second)
	check("streak over", b.Observe(env, nil, 2), 0, 0, false)
	check("a new streak starts free", b.Observe(env, []string{"z"}, 2), 1, 0, false)

	b.Forget(env)
	check("forgotten", b.Observe(env, nil, 2), 0, 0, false)
}
