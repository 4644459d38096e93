package nomadbridge

import (
	"context"
	"errors"

	nomad "github.com/hashicorp/nomad/api"
)

var (
	// ErrJobExists: a registration with check-index 0 found a job of that ID. The
	// job was registered earlier (by a retry, or before a crash); nothing changed.
	ErrJobExists = errors.New("nomad job already exists")
	// ErrJobNotFound: Nomad has no job of that ID.
	ErrJobNotFound = errors.New("nomad job not found")
	// ErrInvalidJob: Nomad rejected a job or template; the wrapped message is Nomad's.
	ErrInvalidJob = errors.New("invalid nomad job")
	// ErrNotOurJob: a job of that ID exists but its meta does not name the
	// runner asking (another operator instance, another Runner, or no runner
	// meta at all). Nothing was changed in Nomad; the wrapping message says
	// whose job it is.
	ErrNotOurJob = errors.New("nomad job belongs to someone else")
)

// JobRef names one of this operator's jobs in Nomad, with the meta that maps it
// back to its Runner.
type JobRef struct {
	Namespace string
	ID        string
	Status    string
	Meta      RunnerMeta
}

// Client is what the operator needs of Nomad, and nothing more.
type Client interface {
	// RegisterRunnerJob registers a new job with check-index 0, so it succeeds
	// only if no job of that ID exists. When one exists, Nomad is left as it
	// was and the answer says whose it is: ErrJobExists when its meta names
	// the same runner as job's (a retry, or a registration before a crash:
	// adopting it is safe), ErrNotOurJob otherwise. Never double-registers,
	// whatever the cache says.
	RegisterRunnerJob(ctx context.Context, job *nomad.Job) error

	// ReleaseRunnerJob ends a runner's job in two steps, one per call, so that
	// the code in it ends within seconds and no call waits for it:
	//   - a job that may still run is stopped (its tasks are killed at once);
	//   - a stopped or dead job none of whose allocations still runs on its
	//     client is purged; one whose tasks are still being killed is left for
	//     a later call.
	// The Runner's finalizer makes the first call; the orphan collector, which
	// releases every job of ours without a Runner, makes the second. Each call
	// first reads the job: one that does not exist is not an error; one whose
	// meta does not name owner (see MatchOwner) and this client's instance
	// returns ErrNotOurJob and is left alone. The orphan collector passes the
	// meta it listed as owner.
	ReleaseRunnerJob(ctx context.Context, namespace, jobID string, owner RunnerMeta) error

	// JobAllocations returns the allocations of a job, newest first. A job that
	// does not exist returns ErrJobNotFound.
	JobAllocations(ctx context.Context, namespace, jobID string) ([]*nomad.AllocationListStub, error)

	// AllocationPorts returns the host ports Nomad mapped for an allocation
	// (the job allocations list does not carry them).
	AllocationPorts(ctx context.Context, namespace, allocID string) ([]nomad.PortMapping, error)

	// ListRunnerJobs lists, across all namespaces, the jobs whose meta names this
	// operator instance. Jobs of other instances and foreign jobs are never listed.
	ListRunnerJobs(ctx context.Context) ([]JobRef, error)

	// ListRunnerAllocations lists, in one call across all namespaces, the
	// allocations of runner jobs (by job ID form) with their resources. It is
	// how a resync learns every runner's state without one read per runner.
	ListRunnerAllocations(ctx context.Context) ([]*nomad.AllocationListStub, error)

	// ParseHCL turns HCL into a job with Nomad's own parser (/v1/jobs/parse).
	// A syntax error returns ErrInvalidJob wrapping Nomad's message.
	ParseHCL(ctx context.Context, hcl string) (*nomad.Job, error)

	// ValidateJob asks Nomad to validate a job (/v1/validate/job). A job Nomad
	// rejects returns ErrInvalidJob wrapping Nomad's messages.
	ValidateJob(ctx context.Context, job *nomad.Job) error

	// Events streams Job and Allocation events of every namespace from index on,
	// until ctx ends or the connection breaks or goes silent (no event and no
	// heartbeat for the idle timeout); the channel is closed then, and a final
	// Events may carry the error. Heartbeats are passed through.
	Events(ctx context.Context, index uint64) (<-chan *nomad.Events, error)

	// PlacementFailure explains why Nomad could not place a job's allocation
	// (its latest evaluation's failed placements, e.g. "Resources exhausted on
	// 1 nodes: memory"), or returns "" when nothing failed to place.
	PlacementFailure(ctx context.Context, namespace, jobID string) (string, error)

	// Ping asks Nomad for its cluster leader: the cheapest call that fails
	// when the servers cannot answer. It is the one reachability check (the
	// leader's Health probe and the manager's readiness check).
	Ping(ctx context.Context) error

	// MemoryOversubscription tells whether Nomad's scheduler honours memory_max.
	MemoryOversubscription(ctx context.Context) (bool, error)

	// Placement returns the Nomad namespace of jobs that name none (the
	// operator's default) and the one region this client talks to.
	Placement(ctx context.Context) (namespace, region string, err error)

	// Instance is the operator instance whose jobs this client touches.
	Instance() string
}
