package nomadbridge

import (
	"k8s.io/utils/clock"
	"sort"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// JobStore keeps, per runner job, what Nomad last said about it: that the job
// exists and its allocations. The Watcher fills it with one jobs list and one
// allocations list at every (re)connect of the event stream and keeps it
// current from the events it reads (Allocation events carry the whole
// allocation). The Runner controller answers its reconciles from it, so neither
// an event nor a resync of every runner costs a Nomad read per runner.
//
// It only answers what it knows for sure: while the stream is down (not synced),
// for a job it has not seen, and for a job Nomad deregistered, it answers "don't
// know" and the caller reads Nomad directly. A miss is never "job lost".
type JobStore struct {
	clock  clock.PassiveClock
	mu     sync.RWMutex
	synced bool
	jobs   map[string]*storedJob
	// tombstones in the order they were made, swept after tombstoneTTL so a
	// long-lived stream does not keep one per runner ever deleted.
	tombstones []tombstone
}

type tombstone struct {
	jobID string
	at    time.Time
}

// tombstoneTTL is how long a deregistered job is remembered as gone (late
// allocation events must not revive it).
const tombstoneTTL = 10 * time.Minute

type storedJob struct {
	// gone: Nomad deregistered the job (a tombstone until the next full list).
	gone bool
	// owner is the UID of the Runner the job's meta names, when the store
	// learnt it from a listing or from our own registration; "" when only an
	// event showed the job (events do not carry its meta).
	owner  string
	allocs map[string]*nomad.AllocationListStub
}

// NewJobStore returns an empty, not yet synced store; c is the clock that
// ages its tombstones.
func NewJobStore(c clock.PassiveClock) *JobStore {
	return &JobStore{clock: c, jobs: map[string]*storedJob{}}
}

// Replace swaps the whole content for a fresh listing: jobs are this instance's
// runner jobs, allocs every allocation (those of other jobs are dropped). The
// store is synced afterwards. Events older than the listing that are applied
// later never move an allocation back (see ObserveAllocation).
func (s *JobStore) Replace(jobs []JobRef, allocs []*nomad.AllocationListStub) {
	m := make(map[string]*storedJob, len(jobs))
	for _, j := range jobs {
		m[j.ID] = &storedJob{owner: j.Meta.UID, allocs: map[string]*nomad.AllocationListStub{}}
	}
	for _, a := range allocs {
		if j, ok := m[a.JobID]; ok {
			j.allocs[a.ID] = a
		}
	}
	s.mu.Lock()
	s.jobs, s.synced, s.tombstones = m, true, nil
	s.mu.Unlock()
}

// Unsync marks the store as not current (the event stream broke): until the
// next Replace every lookup misses.
func (s *JobStore) Unsync() {
	s.mu.Lock()
	s.synced = false
	s.mu.Unlock()
}

// Registered records that the job exists and is the job of the Runner whose
// UID is owner (we just registered it for that Runner, or found it was).
func (s *JobStore) Registered(jobID, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[jobID]
	if !ok {
		j = &storedJob{allocs: map[string]*nomad.AllocationListStub{}}
		s.jobs[jobID] = j
	}
	j.owner = owner
}

// ObserveJob records a Job event: registered (exists) or deregistered (gone).
// The stream is ordered, so the last event about a job wins.
func (s *JobStore) ObserveJob(jobID string, deregistered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deregistered {
		// Purged allocations leave without events: forget them, and let the
		// next lookup ask Nomad (the job may also just be stopped).
		now := s.clock.Now()
		s.jobs[jobID] = &storedJob{gone: true}
		s.tombstones = append(s.tombstones, tombstone{jobID: jobID, at: now})
		for len(s.tombstones) > 0 && now.Sub(s.tombstones[0].at) > tombstoneTTL {
			if j, ok := s.jobs[s.tombstones[0].jobID]; ok && j.gone {
				delete(s.jobs, s.tombstones[0].jobID)
			}
			s.tombstones = s.tombstones[1:]
		}
		return
	}
	if j, ok := s.jobs[jobID]; !ok || j.gone {
		s.jobs[jobID] = &storedJob{allocs: map[string]*nomad.AllocationListStub{}}
	}
}

// ObserveAllocation records an allocation from an event, unless the store
// already holds a newer version of it or its job was deregistered.
func (s *JobStore) ObserveAllocation(a *nomad.AllocationListStub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[a.JobID]
	if !ok {
		// An allocation implies its job exists (or existed: a Job event says
		// when it is gone).
		j = &storedJob{allocs: map[string]*nomad.AllocationListStub{}}
		s.jobs[a.JobID] = j
	}
	if j.gone {
		return
	}
	if old, ok := j.allocs[a.ID]; ok && old.ModifyIndex > a.ModifyIndex {
		return
	}
	j.allocs[a.ID] = a
}

// KnownAs tells whether Nomad has the job for sure as the job of the Runner
// whose UID is owner: we registered it for that Runner, or a listing showed it
// with that UID in its meta, and no event said it was deregistered since. A job
// only an event showed, or one of another Runner, is not known as owner's: the
// caller must ask Nomad, which checks whose job it is.
func (s *JobStore) KnownAs(jobID, owner string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j, ok := s.jobs[jobID]
	return ok && !j.gone && owner != "" && j.owner == owner
}

// Allocations returns the job's allocations, newest first, and true when the
// store knows the job exists; false means "ask Nomad".
func (s *JobStore) Allocations(jobID string) ([]*nomad.AllocationListStub, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j, ok := s.jobs[jobID]
	if !s.synced || !ok || j.gone {
		return nil, false
	}
	out := make([]*nomad.AllocationListStub, 0, len(j.allocs))
	for _, a := range j.allocs {
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].CreateIndex > out[k].CreateIndex })
	return out, true
}

// Ports returns the host ports of an allocation the store holds with its
// resources, and false when it does not (then ask Nomad).
func (s *JobStore) Ports(jobID, allocID string) ([]nomad.PortMapping, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j, ok := s.jobs[jobID]
	if !ok || j.gone {
		return nil, false
	}
	a, ok := j.allocs[allocID]
	if !ok || a.AllocatedResources == nil {
		return nil, false
	}
	return a.AllocatedResources.Shared.Ports, true
}

// allocationStub is what the store keeps of an allocation from an event: the
// list view plus its resources (for the ports).
func allocationStub(a *nomad.Allocation) *nomad.AllocationListStub {
	stub := a.Stub()
	stub.AllocatedResources = a.AllocatedResources
	return stub
}
