package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// funcClock is a clock a test moves by changing what the func returns.
type funcClock func() time.Time

func (f funcClock) Now() time.Time                  { return f() }
func (f funcClock) Since(t time.Time) time.Duration { return f().Sub(t) }

func TestExpectations(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	e := NewExpectations(funcClock(func() time.Time { return now }))
	env := types.NamespacedName{Namespace: "ns", Name: "python"}
	other := types.NamespacedName{Namespace: "ns", Name: "ruby"}

	e.ExpectCreate(env, "python-a")
	e.ExpectCreate(env, "python-b")
	e.ExpectDelete(env, "python-old")

	// The cache shows neither creation yet, and the deleted runner still alive.
	inFlight, deleting := e.Observe(env, map[string]bool{"python-old": true})
	if inFlight != 2 || !deleting["python-old"] {
		t.Fatalf("stale cache: inFlight=%d deleting=%v; want 2 and python-old", inFlight, deleting)
	}
	if n, _ := e.Observe(other, nil); n != 0 {
		t.Errorf("another environment sees %d creates", n)
	}

	// The cache catches up with one creation and the deletion (deletionTimestamp set).
	inFlight, deleting = e.Observe(env, map[string]bool{"python-a": true, "python-old": false})
	if inFlight != 1 || deleting["python-old"] {
		t.Fatalf("partly caught up: inFlight=%d deleting=%v; want 1 and none", inFlight, deleting)
	}

	// A creation the cache never shows is given up after the TTL.
	now = now.Add(expectationTTL + time.Second)
	if inFlight, _ = e.Observe(env, map[string]bool{"python-a": true}); inFlight != 0 {
		t.Errorf("after TTL: inFlight=%d; want 0", inFlight)
	}

	e.ExpectCreate(env, "python-c")
	e.Forget(env)
	if inFlight, _ = e.Observe(env, nil); inFlight != 0 {
		t.Errorf("after Forget: inFlight=%d", inFlight)
	}
}
