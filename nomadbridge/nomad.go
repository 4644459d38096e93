package nomadbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

const (
	// DefaultCallTimeout bounds each NomadClient call. Nomad answers the
	// operator's calls (no blocking queries among them) in milliseconds, a
	// registration under a burst in a few seconds; a call without an answer
	// after 30s is a Nomad or a network that is gone, and the reconcile
	// waiting on it should fail and back off instead of holding its worker.
	DefaultCallTimeout = 30 * time.Second
	// DefaultEventStreamIdleTimeout ends an event stream that went silent.
	// Nomad's servers send a heartbeat on it every 30s when nothing else
	// happens; after two missed ones the connection is taken for dead (a
	// half-open TCP connection otherwise waits forever).
	DefaultEventStreamIdleTimeout = 75 * time.Second
)

// ErrCallTimeout: Nomad did not answer within the call timeout. The wrapping
// message names the call.
var ErrCallTimeout = errors.New("nomad call timed out")

// NomadClient is the Client over a real Nomad API.
type NomadClient struct {
	api         *nomad.Client
	instance    string
	placement   placement
	callTimeout time.Duration
	idleTimeout time.Duration
}

var _ Client = (*NomadClient)(nil)

// NewClient wraps a Nomad API client. instance names this operator installation in
// every job's meta; two operators on one Nomad must use different instances.
func NewClient(api *nomad.Client, instance string) (*NomadClient, error) {
	if instance == "" {
		return nil, errors.New("operator instance name must not be empty")
	}
	return &NomadClient{api: api, instance: instance, callTimeout: DefaultCallTimeout, idleTimeout: DefaultEventStreamIdleTimeout}, nil
}

// bound gives one method call at most the call timeout. Defer the returned
// func with a pointer to the method's error: it ends the deadline and, when
// the deadline is what ended the call, says so in the error.
func (c *NomadClient) bound(ctx context.Context) (context.Context, func(*error)) {
	cause := c.timeoutCause()
	ctx, cancel := context.WithTimeoutCause(ctx, c.callTimeout, cause)
	return ctx, func(err *error) {
		// net/http reports the cause itself; other paths may report only
		// context.DeadlineExceeded.
		if *err != nil && !errors.Is(*err, ErrCallTimeout) && errors.Is(context.Cause(ctx), ErrCallTimeout) {
			*err = fmt.Errorf("%w (%w)", *err, cause)
		}
		cancel()
	}
}

// timeoutCause is the error a call that hit the call timeout ends with.
func (c *NomadClient) timeoutCause() error {
	return fmt.Errorf("%w: no answer within %s", ErrCallTimeout, c.callTimeout)
}

// Instance implements Client.
func (c *NomadClient) Instance() string { return c.instance }

// API returns the underlying Nomad API client (for exec and tests).
func (c *NomadClient) API() *nomad.Client { return c.api }

// Ping implements Client.
func (c *NomadClient) Ping(ctx context.Context) (err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.QueryOptions{}).WithContext(ctx)
	var leader string
	if _, err := c.api.Raw().Query("/v1/status/leader", &leader, q); err != nil {
		return fmt.Errorf("ask nomad for its leader: %w", err)
	}
	if leader == "" {
		return errors.New("nomad has no leader")
	}
	return nil
}

// RegisterRunnerJob implements Client.
func (c *NomadClient) RegisterRunnerJob(ctx context.Context, job *nomad.Job) (err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	id := deref(job.ID)
	meta, ok := ParseRunnerMeta(job.Meta)
	if !ok || meta.Instance != c.instance {
		// A job without our meta would be invisible to ListRunnerJobs and leak.
		return fmt.Errorf("register runner job %s: job meta does not name operator instance %q", id, c.instance)
	}
	opts := &nomad.RegisterOptions{EnforceIndex: true, ModifyIndex: 0}
	q := (&nomad.WriteOptions{Namespace: deref(job.Namespace), Region: deref(job.Region)}).WithContext(ctx)
	if _, _, err := c.api.Jobs().RegisterOpts(job, opts, q); err != nil {
		if isEnforceIndexConflict(err) {
			return c.whoseJob(ctx, job, meta)
		}
		if isBadRequest(err) {
			return fmt.Errorf("register runner job %s: %w: %s", id, ErrInvalidJob, nomadMessage(err))
		}
		return fmt.Errorf("register runner job %s: %w", id, err)
	}
	return nil
}

// whoseJob tells, after check-index 0 refused job because its ID exists,
// whether the existing job is this runner's (ErrJobExists: safe to adopt) or
// someone else's (ErrNotOurJob). A job ID is random, so the usual answer is a
// retry of our own registration; anything else is a Runner naming a job it
// did not make, and adopting it would hand out someone else's allocation.
func (c *NomadClient) whoseJob(ctx context.Context, job *nomad.Job, meta RunnerMeta) error {
	id := deref(job.ID)
	q := (&nomad.QueryOptions{Namespace: deref(job.Namespace), Region: deref(job.Region)}).WithContext(ctx)
	existing, _, err := c.api.Jobs().Info(id, q)
	if err != nil {
		// Gone between the refusal and the read (purged meanwhile): not an
		// answer either way; the caller retries and registers or learns then.
		return fmt.Errorf("register runner job %s: it exists, but reading it failed: %w", id, err)
	}
	if ok, whose := MatchOwner(meta, existing.Meta); !ok {
		return fmt.Errorf("register runner job %s: the existing job of that ID is not runner %s/%s's (its meta: %s): %w",
			id, meta.Namespace, meta.Runner, whose, ErrNotOurJob)
	}
	return fmt.Errorf("register runner job %s: %w", id, ErrJobExists)
}

// ReleaseRunnerJob implements Client.
func (c *NomadClient) ReleaseRunnerJob(ctx context.Context, namespace, jobID string, owner RunnerMeta) (err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	if owner.Instance != c.instance {
		return fmt.Errorf("release runner job %s: owner names operator instance %q, this client is %q: %w",
			jobID, owner.Instance, c.instance, ErrNotOurJob)
	}
	q := (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx)
	job, _, err := c.api.Jobs().Info(jobID, q)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("read runner job %s before releasing it: %w", jobID, err)
	}
	if ok, whose := MatchOwner(owner, job.Meta); !ok {
		return fmt.Errorf("release runner job %s: not runner %s/%s's (its meta: %s): %w",
			jobID, owner.Namespace, owner.Runner, whose, ErrNotOurJob)
	}
	// Between the read and the write below the job could in principle be
	// purged and a foreign one registered under the same (random) ID; Nomad's
	// deregistration takes no check-index, so this window cannot be closed.
	w := (&nomad.WriteOptions{Namespace: namespace}).WithContext(ctx)
	if deref(job.Status) != jobStatusDead && !boolOf(job.Stop) {
		// Stop, not purge: a stop reaches the client as a desired status,
		// and it kills the tasks at once. A purge deletes the allocations
		// from the state instead, and the client then ends their tasks
		// through its garbage collector, a couple of allocations at a time,
		// so under load a released runner's code would run on long after.
		if _, _, err := c.api.Jobs().DeregisterOpts(jobID, &nomad.DeregisterOptions{Purge: false}, w); err != nil && !isNotFound(err) {
			return fmt.Errorf("stop runner job %s: %w", jobID, err)
		}
		return nil
	}
	live, err := c.liveAllocations(ctx, namespace, jobID)
	if err != nil {
		return err
	}
	if live > 0 {
		// Stopped, but the client has not ended every task yet: purging now
		// would hand the rest to its garbage collector. A later call (the
		// orphan collector's next pass) purges it.
		return nil
	}
	if _, _, err := c.api.Jobs().DeregisterOpts(jobID, &nomad.DeregisterOptions{Purge: true}, w); err != nil && !isNotFound(err) {
		return fmt.Errorf("purge runner job %s: %w", jobID, err)
	}
	return nil
}

// liveAllocations counts a job's allocations whose tasks the client may still
// be running (pending or running as the client reports them).
func (c *NomadClient) liveAllocations(ctx context.Context, namespace, jobID string) (int, error) {
	allocs, _, err := c.api.Jobs().Allocations(jobID, true, (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("list allocations of stopped runner job %s: %w", jobID, err)
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == nomad.AllocClientStatusPending || a.ClientStatus == nomad.AllocClientStatusRunning {
			n++
		}
	}
	return n, nil
}

// JobAllocations implements Client.
func (c *NomadClient) JobAllocations(ctx context.Context, namespace, jobID string) (_ []*nomad.AllocationListStub, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx)
	// The allocations endpoint answers an empty list for an unknown job, so a
	// missing job is told apart with the job's summary, which 404s.
	allocs, _, err := c.api.Jobs().Allocations(jobID, true, q)
	if err != nil {
		return nil, fmt.Errorf("list allocations of runner job %s: %w", jobID, err)
	}
	if len(allocs) == 0 {
		if _, _, err := c.api.Jobs().Summary(jobID, q); err != nil {
			if isNotFound(err) {
				return nil, fmt.Errorf("list allocations of runner job %s: %w", jobID, ErrJobNotFound)
			}
			return nil, fmt.Errorf("read runner job %s: %w", jobID, err)
		}
	}
	sortNewestFirst(allocs)
	return allocs, nil
}

// AllocationPorts implements Client.
func (c *NomadClient) AllocationPorts(ctx context.Context, namespace, allocID string) (_ []nomad.PortMapping, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	alloc, _, err := c.api.Allocations().Info(allocID, (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read allocation %s: %w", allocID, err)
	}
	if alloc.AllocatedResources == nil {
		return nil, nil
	}
	return alloc.AllocatedResources.Shared.Ports, nil
}

// ListRunnerJobs implements Client.
func (c *NomadClient) ListRunnerJobs(ctx context.Context) (_ []JobRef, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.QueryOptions{
		Namespace: "*",
		// Filtering in Nomad keeps the answer small; the check below is what
		// guarantees we never return a job that is not ours.
		Filter: fmt.Sprintf("Meta[%q] == %q", MetaInstance, c.instance),
	}).WithContext(ctx)
	stubs, _, err := c.api.Jobs().ListOptions(&nomad.JobListOptions{Fields: &nomad.JobListFields{Meta: true}}, q)
	if err != nil {
		return nil, fmt.Errorf("list runner jobs of instance %s: %w", c.instance, err)
	}
	refs := make([]JobRef, 0, len(stubs))
	for _, s := range stubs {
		meta, ok := ParseRunnerMeta(s.Meta)
		if !ok || meta.Instance != c.instance {
			continue
		}
		refs = append(refs, JobRef{Namespace: s.Namespace, ID: s.ID, Status: s.Status, Meta: meta})
	}
	return refs, nil
}

// ListRunnerAllocations implements Client.
func (c *NomadClient) ListRunnerAllocations(ctx context.Context) (_ []*nomad.AllocationListStub, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.QueryOptions{
		Namespace: "*",
		// With their resources, so a runner turning Idle needs no read for its ports.
		Params: map[string]string{"resources": "true"},
	}).WithContext(ctx)
	stubs, _, err := c.api.Allocations().List(q)
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	out := stubs[:0]
	for _, a := range stubs {
		if _, _, ok := ParseRunnerJobID(a.JobID); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// ParseHCL implements Client.
func (c *NomadClient) ParseHCL(ctx context.Context, hcl string) (_ *nomad.Job, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	// The api package's ParseHCLOpts takes no options, so no context: the same
	// request through Raw, to bound it like every other call. (The template's
	// size is bounded by the CRD, 128 KiB.)
	job := &nomad.Job{}
	req := &nomad.JobsParseRequest{JobHCL: hcl, Canonicalize: false}
	if _, err := c.api.Raw().Write("/v1/jobs/parse", req, job, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		if isBadRequest(err) {
			return nil, fmt.Errorf("parse job template: %w: %s", ErrInvalidJob, nomadMessage(err))
		}
		return nil, fmt.Errorf("parse job template: %w", err)
	}
	return job, nil
}

// ValidateJob implements Client.
func (c *NomadClient) ValidateJob(ctx context.Context, job *nomad.Job) (err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.WriteOptions{Namespace: deref(job.Namespace), Region: deref(job.Region)}).WithContext(ctx)
	resp, _, err := c.api.Jobs().Validate(job, q)
	if err != nil {
		if isBadRequest(err) {
			return fmt.Errorf("validate job %s: %w: %s", deref(job.ID), ErrInvalidJob, nomadMessage(err))
		}
		return fmt.Errorf("validate job %s: %w", deref(job.ID), err)
	}
	if resp.Error != "" || len(resp.ValidationErrors) > 0 {
		msg := resp.Error
		if msg == "" {
			msg = strings.Join(resp.ValidationErrors, "; ")
		}
		return fmt.Errorf("validate job %s: %w: %s", deref(job.ID), ErrInvalidJob, strings.TrimSpace(msg))
	}
	return nil
}

// PlacementFailure implements Client.
func (c *NomadClient) PlacementFailure(ctx context.Context, namespace, jobID string) (_ string, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	q := (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx)
	evals, _, err := c.api.Jobs().Evaluations(jobID, q)
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("list evaluations of runner job %s: %w", jobID, ErrJobNotFound)
		}
		return "", fmt.Errorf("list evaluations of runner job %s: %w", jobID, err)
	}
	var latest *nomad.Evaluation
	for _, e := range evals {
		if len(e.FailedTGAllocs) > 0 && (latest == nil || e.CreateIndex > latest.CreateIndex) {
			latest = e
		}
	}
	if latest == nil {
		return "", nil
	}
	var parts []string
	for _, m := range latest.FailedTGAllocs {
		parts = append(parts, describePlacementFailure(m))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; "), nil
}

// describePlacementFailure says in a sentence what `nomad job status` shows
// under "Placement Failure".
func describePlacementFailure(m *nomad.AllocationMetric) string {
	var why []string
	for dim, n := range m.DimensionExhausted {
		why = append(why, fmt.Sprintf("%s exhausted on %d nodes", dim, n))
	}
	for c, n := range m.ConstraintFiltered {
		why = append(why, fmt.Sprintf("constraint %s filtered %d nodes", c, n))
	}
	for class, n := range m.ClassFiltered {
		why = append(why, fmt.Sprintf("class %s filtered %d nodes", class, n))
	}
	sort.Strings(why)
	msg := fmt.Sprintf("no node fits (%d evaluated, %d filtered, %d exhausted)", m.NodesEvaluated, m.NodesFiltered, m.NodesExhausted)
	if m.NodesInPool == 0 && m.NodesEvaluated == 0 {
		msg = "no node is available in the job's datacenters and node pool"
	}
	if len(why) > 0 {
		msg += ": " + strings.Join(why, ", ")
	}
	return msg
}

// MemoryOversubscription implements Client.
func (c *NomadClient) MemoryOversubscription(ctx context.Context) (_ bool, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	resp, _, err := c.api.Operator().SchedulerGetConfiguration((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("read nomad scheduler configuration: %w", err)
	}
	return resp.SchedulerConfig != nil && resp.SchedulerConfig.MemoryOversubscriptionEnabled, nil
}

// Events implements Client. Opening the stream is bounded by the call
// timeout; the open stream by the idle timeout: when nothing arrives for that
// long, not even one of the heartbeats Nomad sends every 30s, the connection
// is closed and the channel ends with an error saying so.
//
// The stream is read here, not through the api package's EventStream, which
// drops the heartbeats: without them a dead connection (a half-open TCP
// connection, a proxy that stopped forwarding) cannot be told from a quiet
// cluster, and the reader would wait on it forever.
func (c *NomadClient) Events(ctx context.Context, index uint64) (<-chan *nomad.Events, error) {
	stream, cancel := context.WithCancelCause(ctx)
	opening := time.AfterFunc(c.callTimeout, func() { cancel(c.timeoutCause()) })
	params := url.Values{
		"index": {strconv.FormatUint(index, 10)},
		"topic": {string(nomad.TopicJob) + ":*", string(nomad.TopicAllocation) + ":*"},
	}
	q := (&nomad.QueryOptions{Namespace: "*"}).WithContext(stream)
	body, err := c.api.Raw().Response("/v1/event/stream?"+params.Encode(), q)
	opening.Stop()
	if err == nil && stream.Err() != nil {
		// The deadline came just as the answer did.
		_ = body.Close()
		err = stream.Err()
	}
	if err != nil {
		if cause := context.Cause(stream); !errors.Is(err, ErrCallTimeout) && errors.Is(cause, ErrCallTimeout) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		cancel(nil)
		return nil, fmt.Errorf("open nomad event stream at index %d: %w", index, err)
	}
	ch := make(chan *nomad.Events, 10)
	go c.readEvents(ctx, stream, cancel, body, ch)
	return ch, nil
}

// errStreamIdle ends an event stream on which nothing arrived for the idle timeout.
var errStreamIdle = errors.New("nomad event stream idle")

// readEvents decodes the stream's newline-delimited JSON into out, heartbeats
// included, until the caller's ctx ends (then silently) or the stream breaks
// or goes idle (then with a last Events carrying the error).
func (c *NomadClient) readEvents(ctx, stream context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, out chan<- *nomad.Events) {
	defer close(out)
	defer func() { _ = body.Close() }()
	defer cancel(nil)
	idle := time.AfterFunc(c.idleTimeout, func() {
		cancel(fmt.Errorf("%w: no event or heartbeat for %s, taking the connection for dead", errStreamIdle, c.idleTimeout))
	})
	defer idle.Stop()
	dec := json.NewDecoder(body)
	for {
		batch := &nomad.Events{}
		if err := dec.Decode(batch); err != nil {
			if ctx.Err() != nil {
				return
			}
			if cause := context.Cause(stream); errors.Is(cause, errStreamIdle) {
				err = cause
			}
			batch = &nomad.Events{Err: fmt.Errorf("read nomad event stream: %w", err)}
		} else {
			idle.Reset(c.idleTimeout)
		}
		select {
		case <-ctx.Done():
			return
		case out <- batch:
		}
		if batch.Err != nil {
			return
		}
	}
}

// jobStatusDead is Nomad's status of a job none of whose allocations is
// meant to run any more (the api package has no constant for it).
const jobStatusDead = "dead"

func boolOf(b *bool) bool { return b != nil && *b }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// statusCode is the HTTP status of a Nomad API error, or 0 for a transport error.
func statusCode(err error) int {
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode()
	}
	return 0
}

// nomadMessage is the body of Nomad's error answer: its own words, which are what
// a user needs to see in a condition.
func nomadMessage(err error) string {
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) && ue.HasBody() {
		return strings.TrimSpace(ue.Body())
	}
	return err.Error()
}

func isNotFound(err error) bool   { return statusCode(err) == http.StatusNotFound }
func isBadRequest(err error) bool { return statusCode(err) == http.StatusBadRequest }

// isEnforceIndexConflict tells the answer Nomad gives a registration whose
// check-index does not match: an error whose body starts with the api package's
// RegisterEnforceIndexErrPrefix.
func isEnforceIndexConflict(err error) bool {
	return strings.Contains(nomadMessage(err), nomad.RegisterEnforceIndexErrPrefix)
}

func sortNewestFirst(allocs []*nomad.AllocationListStub) {
	sort.SliceStable(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
}
