package nomadbridge_test

import (
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// fixedClock is a clock a test moves by hand.
type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time                  { return c.t }
func (c *fixedClock) Since(t time.Time) time.Duration { return c.t.Sub(t) }

func newStore() (*nomadbridge.JobStore, *fixedClock) {
	clk := &fixedClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	return nomadbridge.NewJobStore(clk), clk
}

func TestJobStoreAnswersOnlyWhatItKnows(t *testing.T) {
	s, _ := newStore()
	if _, ok := s.Allocations("j1"); ok {
		t.Fatal("a store never filled must miss")
	}
	alloc := func(id, job string, index uint64, status string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{ID: id, JobID: job, ModifyIndex: index, CreateIndex: index, ClientStatus: status}
	}
	s.Replace([]nomadbridge.JobRef{{ID: "j1"}, {ID: "j2"}},
		[]*nomad.AllocationListStub{alloc("a1", "j1", 10, "running"), alloc("x", "foreign", 10, "running")})

	if got, ok := s.Allocations("j1"); !ok || len(got) != 1 || got[0].ClientStatus != "running" {
		t.Fatalf("j1: %v %v, want its running allocation", got, ok)
	}
	if got, ok := s.Allocations("j2"); !ok || len(got) != 0 {
		t.Fatalf("j2 (not placed yet): %v %v, want known with no allocation", got, ok)
	}
	if _, ok := s.Allocations("j3"); ok {
		t.Fatal("a job the listing did not hold must miss (ask Nomad), never count as lost")
	}
	if _, ok := s.Allocations("foreign"); ok {
		t.Fatal("allocations of jobs not listed as ours are dropped")
	}

	// An event older than the listing does not move the allocation back.
	s.ObserveAllocation(alloc("a1", "j1", 5, "pending"))
	if got, _ := s.Allocations("j1"); got[0].ClientStatus != "running" {
		t.Fatalf("older event won: %s", got[0].ClientStatus)
	}
	s.ObserveAllocation(alloc("a1", "j1", 12, "failed"))
	if got, _ := s.Allocations("j1"); got[0].ClientStatus != "failed" {
		t.Fatalf("newer event lost: %s", got[0].ClientStatus)
	}
	// A second allocation sorts first (newest).
	s.ObserveAllocation(alloc("a2", "j1", 20, "pending"))
	if got, _ := s.Allocations("j1"); len(got) != 2 || got[0].ID != "a2" {
		t.Fatalf("allocations %v, want a2 first", got)
	}

	// Deregistered: miss (ask Nomad), and late allocation events do not revive it.
	s.ObserveJob("j1", true)
	s.ObserveAllocation(alloc("a1", "j1", 30, "running"))
	if _, ok := s.Allocations("j1"); ok {
		t.Fatal("a deregistered job must miss")
	}

	// Registered by us, or by an event: known, no allocation yet.
	s.Registered("j4", "uid-4")
	s.ObserveJob("j5", false)
	for _, j := range []string{"j4", "j5"} {
		if got, ok := s.Allocations(j); !ok || len(got) != 0 {
			t.Fatalf("%s: %v %v, want known with no allocation", j, got, ok)
		}
	}

	// Stream down: everything misses until the next listing.
	s.Unsync()
	if _, ok := s.Allocations("j2"); ok {
		t.Fatal("an unsynced store must miss")
	}
}

func TestJobStorePortsFromAllocatedResources(t *testing.T) {
	s, _ := newStore()
	s.Replace([]nomadbridge.JobRef{{ID: "j"}}, nil)
	s.ObserveAllocation(&nomad.AllocationListStub{ID: "a", JobID: "j", AllocatedResources: &nomad.AllocatedResources{
		Shared: nomad.AllocatedSharedResources{Ports: []nomad.PortMapping{{Label: "http", Value: 20001, To: 8080, HostIP: "127.0.0.1"}}},
	}})
	ports, ok := s.Ports("j", "a")
	if !ok || len(ports) != 1 || ports[0].Value != 20001 {
		t.Fatalf("ports %v %v", ports, ok)
	}
	if _, ok := s.Ports("j", "other"); ok {
		t.Fatal("unknown allocation must miss")
	}
}

// Only a job the store knows as a Runner's own lets that Runner skip its
// registration: one another Runner owns, or one only an event showed, does
// not (the registration then asks Nomad whose job it is).
func TestJobStoreKnowsWhoseJobItIs(t *testing.T) {
	s, _ := newStore()
	s.Replace([]nomadbridge.JobRef{
		{ID: "listed", Meta: nomadbridge.RunnerMeta{UID: "uid-1"}},
		{ID: "legacy"}, // registered before UIDs were recorded
	}, nil)
	s.ObserveJob("seen", false)
	s.Registered("mine", "uid-3")
	for _, tc := range []struct {
		job, owner string
		want       bool
	}{
		{"listed", "uid-1", true},
		{"listed", "uid-2", false},
		{"listed", "", false},
		{"legacy", "uid-1", false},
		{"legacy", "", false},
		{"seen", "uid-1", false},
		{"mine", "uid-3", true},
		{"mine", "uid-1", false},
		{"unknown", "uid-1", false},
	} {
		if got := s.KnownAs(tc.job, tc.owner); got != tc.want {
			t.Errorf("KnownAs(%q, %q) = %v, want %v", tc.job, tc.owner, got, tc.want)
		}
	}
	s.ObserveJob("mine", false) // a later registration event keeps what we know
	if !s.KnownAs("mine", "uid-3") {
		t.Error("a registration event made the store forget whose job it is")
	}
	s.ObserveJob("mine", true)
	if s.KnownAs("mine", "uid-3") {
		t.Error("a deregistered job is still known")
	}
}

// A deregistered job stays gone against late allocation events for the
// tombstone's lifetime, measured on the store's clock; after it the tombstone
// is swept so a long-lived stream does not keep one per runner ever deleted.
func TestJobStoreSweepsTombstonesOnItsClock(t *testing.T) {
	s, clk := newStore()
	s.Replace([]nomadbridge.JobRef{{ID: "old"}, {ID: "new"}}, nil)
	late := func(job string) {
		s.ObserveAllocation(&nomad.AllocationListStub{ID: job + "-a", JobID: job, ModifyIndex: 99})
	}

	s.ObserveJob("old", true)
	clk.t = clk.t.Add(5 * time.Minute)
	late("old")
	if _, ok := s.Allocations("old"); ok {
		t.Fatal("a late allocation event revived a job deregistered 5 minutes ago")
	}

	clk.t = clk.t.Add(6 * time.Minute)
	s.ObserveJob("new", true) // sweeps tombstones older than their lifetime
	late("old")
	if _, ok := s.Allocations("old"); !ok {
		t.Fatal("the tombstone of a job deregistered 11 minutes ago was not swept")
	}
	late("new")
	if _, ok := s.Allocations("new"); ok {
		t.Fatal("the fresh tombstone was swept with the old one")
	}
}
