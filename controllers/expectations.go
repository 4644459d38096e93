package controllers

import (
	"k8s.io/utils/clock"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// expectationTTL bounds how long an unseen create or delete is trusted; after
// it, the cache is assumed to have missed it and the pool maths sees the truth.
const expectationTTL = 2 * time.Minute

// Expectations remember, per environment, the runners this operator created or
// deleted that its cache does not reflect yet. Without them a reconcile that runs
// before the cache catches up would create the same runners again (the
// over-creation bugs of Agones and agent-sandbox).
type Expectations struct {
	mu      sync.Mutex
	creates map[types.NamespacedName]map[string]time.Time
	deletes map[types.NamespacedName]map[string]time.Time
	clock   clock.PassiveClock
}

// NewExpectations returns empty expectations.
func NewExpectations(c clock.PassiveClock) *Expectations {
	return &Expectations{
		creates: map[types.NamespacedName]map[string]time.Time{},
		deletes: map[types.NamespacedName]map[string]time.Time{},
		clock:   c,
	}
}

// ExpectCreate records a runner created for env.
func (e *Expectations) ExpectCreate(env types.NamespacedName, runner string) {
	e.record(e.creates, env, runner)
}

// ExpectDelete records a runner deleted for env.
func (e *Expectations) ExpectDelete(env types.NamespacedName, runner string) {
	e.record(e.deletes, env, runner)
}

// Observe settles the expectations of env against what the cache shows: the
// names of its runners, and which of those are being deleted. It returns the
// creates still in flight and the set of runners deleted but still shown alive.
func (e *Expectations) Observe(env types.NamespacedName, alive map[string]bool) (inFlightCreates int, deleting map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	for name, at := range e.creates[env] {
		if _, seen := alive[name]; seen || now.Sub(at) > expectationTTL {
			delete(e.creates[env], name)
		}
	}
	deleting = map[string]bool{}
	for name, at := range e.deletes[env] {
		stillAlive, seen := alive[name]
		if !seen || !stillAlive || now.Sub(at) > expectationTTL {
			delete(e.deletes[env], name)
			continue
		}
		deleting[name] = true
	}
	return len(e.creates[env]), deleting
}

// Forget drops everything about env.
func (e *Expectations) Forget(env types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.creates, env)
	delete(e.deletes, env)
}

func (e *Expectations) record(m map[types.NamespacedName]map[string]time.Time, env types.NamespacedName, runner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m[env] == nil {
		m[env] = map[string]time.Time{}
	}
	m[env][runner] = e.clock.Now()
}
