package faults_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// ledger counts, across every manager of the suite, the successful
// registrations per Nomad job ID (a second one would be a double registration;
// with check-index 0 Nomad refuses it, so it shows as ErrJobExists instead).
type ledger struct {
	mu         sync.Mutex
	registered map[string]int
	exists     map[string]int
	failures   int // calls that returned an error other than the above
}

func newLedger() *ledger {
	return &ledger{registered: map[string]int{}, exists: map[string]int{}}
}

func (l *ledger) registrations(prefix string) (total int, perJob map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	perJob = map[string]int{}
	for id, n := range l.registered {
		if len(id) >= len(prefix) && id[:len(prefix)] == prefix {
			perJob[id] = n
			total += n
		}
	}
	return total, perJob
}

func (l *ledger) failed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

var errInjected = errors.New("injected fault: nomad unreachable")

// faultBridge wraps the real bridge of one manager. Hooks run inside the calls,
// which is where a "kill" (cancelling the manager) is injected.
type faultBridge struct {
	nomadbridge.Client
	ledger *ledger

	mu sync.Mutex
	// beforeRegister/afterRegister run around a registration; a non-nil error
	// from beforeRegister is returned instead of registering.
	beforeRegister func(job *nomad.Job) error
	afterRegister  func(job *nomad.Job, err error)
	// beforePurge runs before a purge; a non-nil error is returned instead.
	beforePurge func(jobID string) error
	// down makes every call fail, like an unreachable Nomad.
	down bool
	// eventsBlocked makes (re)connecting to the event stream fail.
	eventsBlocked bool
	stream        context.CancelFunc
	eventIndexes  []uint64 // the index of every Events call, in order
}

var _ nomadbridge.Client = (*faultBridge)(nil)

func (b *faultBridge) set(f func(b *faultBridge)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func (b *faultBridge) isDown() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.down
}

func (b *faultBridge) fail(err error) error {
	if err != nil && !errors.Is(err, nomadbridge.ErrJobExists) && !errors.Is(err, nomadbridge.ErrJobNotFound) &&
		!errors.Is(err, nomadbridge.ErrInvalidJob) && !errors.Is(err, nomadbridge.ErrNotOurJob) {
		b.ledger.mu.Lock()
		b.ledger.failures++
		b.ledger.mu.Unlock()
	}
	return err
}

func (b *faultBridge) RegisterRunnerJob(ctx context.Context, job *nomad.Job) error {
	b.mu.Lock()
	before, after, down := b.beforeRegister, b.afterRegister, b.down
	b.mu.Unlock()
	if down {
		return b.fail(errInjected)
	}
	if before != nil {
		if err := before(job); err != nil {
			return err
		}
	}
	err := b.Client.RegisterRunnerJob(ctx, job)
	b.ledger.mu.Lock()
	switch {
	case err == nil:
		b.ledger.registered[*job.ID]++
	case errors.Is(err, nomadbridge.ErrJobExists):
		b.ledger.exists[*job.ID]++
	}
	b.ledger.mu.Unlock()
	if after != nil {
		after(job, err)
	}
	return b.fail(err)
}

func (b *faultBridge) ReleaseRunnerJob(ctx context.Context, namespace, jobID string, owner nomadbridge.RunnerMeta) error {
	b.mu.Lock()
	before, down := b.beforePurge, b.down
	b.mu.Unlock()
	if down {
		return b.fail(errInjected)
	}
	if before != nil {
		if err := before(jobID); err != nil {
			return b.fail(err)
		}
	}
	return b.fail(b.Client.ReleaseRunnerJob(ctx, namespace, jobID, owner))
}

func (b *faultBridge) JobAllocations(ctx context.Context, namespace, jobID string) ([]*nomad.AllocationListStub, error) {
	if b.isDown() {
		return nil, b.fail(errInjected)
	}
	allocs, err := b.Client.JobAllocations(ctx, namespace, jobID)
	return allocs, b.fail(err)
}

func (b *faultBridge) ListRunnerJobs(ctx context.Context) ([]nomadbridge.JobRef, error) {
	if b.isDown() {
		return nil, b.fail(errInjected)
	}
	refs, err := b.Client.ListRunnerJobs(ctx)
	return refs, b.fail(err)
}

func (b *faultBridge) Ping(ctx context.Context) error {
	if b.isDown() {
		return b.fail(errInjected)
	}
	return b.fail(b.Client.Ping(ctx))
}

// Events records the index asked for, fails while blocked, and can be cut by
// dropStream (the connection closing under the reader).
func (b *faultBridge) Events(ctx context.Context, index uint64) (<-chan *nomad.Events, error) {
	b.mu.Lock()
	b.eventIndexes = append(b.eventIndexes, index)
	if b.eventsBlocked || b.down {
		b.mu.Unlock()
		return nil, b.fail(fmt.Errorf("connect to event stream: %w", errInjected))
	}
	ctx, cancel := context.WithCancel(ctx)
	b.stream = cancel
	b.mu.Unlock()
	ch, err := b.Client.Events(ctx, index)
	if err != nil {
		cancel()
		return nil, b.fail(err)
	}
	return ch, nil
}

// dropStream closes the current event stream connection.
func (b *faultBridge) dropStream() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream != nil {
		b.stream()
	}
}

func (b *faultBridge) indexes() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint64(nil), b.eventIndexes...)
}
