// Package claim is the client side of the claim protocol: take an idle Runner of
// an ExecutionEnvironment exactly once, keep it alive, give it back.
//
// A claim is one JSON patch of the Runner's status subresource that tests the
// stored phase is Idle and sets phase Claimed plus the claim. The API server
// evaluates the test against the stored object, so of two racing claimers exactly
// one wins; CEL rules on the CRD refuse any other way of taking a runner. No
// controller is in the claim path: a claim costs one API write.
//
// A claim whose answer is lost (a timeout or a broken connection after the API
// server may have stored it) is not given up: Claim reads the runner back from
// the API server and, if it carries the claim's token, returns it. Renew and
// Release retry such failures too. Every claim carries an inactivity timeout
// (DefaultInactivityTimeout unless the caller chooses), so a claimer that dies
// without releasing does not hold its runner, and its Nomad job, forever.
package claim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// ErrNoIdleRunner: the environment has no idle runner to claim right now (the
// pool is empty or every candidate was taken by a faster claimer).
var ErrNoIdleRunner = errors.New("no idle runner")

// ErrNotHolder: the runner's claim carries another token than the caller's.
var ErrNotHolder = errors.New("runner is not held with this token")

// DefaultInactivityTimeout is the inactivity timeout of a claim whose Options
// leave it 0: long enough for an interactive session between renewals, short
// enough that a crashed claimer's runner returns to the pool soon.
const DefaultInactivityTimeout = 10 * time.Minute

// NoInactivityTimeout, as Options.InactivityTimeout, asks the operator never to
// delete the runner for inactivity: it is held until Release. Use it only where
// something else releases runners whose holder died.
const NoInactivityTimeout time.Duration = -1

// Options of a claim.
type Options struct {
	// Holder names who claims (a user, a session); required.
	Holder string
	// Token identifies this claim; a fresh UUID when empty. Keep it: Renew and
	// Release take it, so a restarted client never acts on an older claim.
	Token string
	// InactivityTimeout: the operator deletes the runner after this long without
	// a Renew. 0 means DefaultInactivityTimeout; NoInactivityTimeout (any
	// negative value) means never. Rounded up to whole seconds; the API server
	// refuses more than 7 days.
	InactivityTimeout time.Duration
	// Wait makes Claim retry until an idle runner turns up or ctx ends, instead
	// of failing at once with ErrNoIdleRunner.
	Wait bool
	// RetryInterval is the pause between rounds while waiting (default 200ms, jittered).
	RetryInterval time.Duration
	// Stats, when set, receives what the claim cost (for benchmarks and metrics).
	Stats *Stats
}

// Stats is what one Claim cost: API calls, and candidates lost to faster claimers.
type Stats struct {
	// Lists is the number of idle-runner lists (one per round).
	Lists int
	// Patches is the number of claim patches sent (the winning one included).
	Patches int
	// Conflicts is the number of candidates another claimer took first (or that
	// vanished) between the list and the patch.
	Conflicts int
	// Skipped is the number of listed candidates not tried because a Claim of
	// this process patched them moments ago (a cache that has not caught up).
	Skipped int
	// ReadBacks is the number of times a claim patch ended without an answer
	// that said whether it was stored, and the runner was read back to learn it.
	ReadBacks int
}

// Claim takes one idle runner of the environment and returns it as stored after
// the claim. It tries the idle runners in random order, so racing claimers rarely
// pick the same one; a candidate taken meanwhile is skipped. With no idle runner
// it returns ErrNoIdleRunner, or with opts.Wait keeps trying until ctx ends.
//
// When a claim patch fails in a way that leaves open whether the API server
// stored it (see maybeApplied), Claim reads that runner back and returns it if it
// holds our token; if it is still Idle it sends the same patch again (the patch's
// test op lets at most one of the two take effect). These reads go through
// c.SubResource("status").Get, which controller-runtime's client always sends to
// the API server, even when c reads objects from an informer cache: a cache
// that has not seen the claim yet would hide it and leak the runner. The
// claimer role grants get on runners/status for this. The read back may outlive
// ctx by a few seconds, so a claim that raced the caller's deadline is returned
// rather than left held by a token nobody knows.
func Claim(ctx context.Context, c client.Client, namespace, environment string, opts Options) (*v1alpha1.Runner, error) {
	if opts.Holder == "" {
		return nil, errors.New("claim: holder must not be empty")
	}
	if opts.Token == "" {
		opts.Token = uuid.NewString()
	}
	interval := opts.RetryInterval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	for {
		rn, err := claimOnce(ctx, c, namespace, environment, opts)
		if !errors.Is(err, ErrNoIdleRunner) || !opts.Wait {
			return rn, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("claim a runner of %s/%s: %w (%w)", namespace, environment, ErrNoIdleRunner, ctx.Err())
		case <-time.After(interval/2 + rand.N(interval)):
		}
	}
}

func claimOnce(ctx context.Context, c client.Client, namespace, environment string, opts Options) (*v1alpha1.Runner, error) {
	stats := opts.Stats
	if stats == nil {
		stats = &Stats{}
	}
	stats.Lists++
	list := &v1alpha1.RunnerList{}
	if err := c.List(ctx, list, client.InNamespace(namespace),
		client.MatchingLabels{v1alpha1.EnvironmentLabel: environment},
		client.MatchingFields{v1alpha1.PhaseField: string(v1alpha1.RunnerIdle)}); err != nil {
		if strings.Contains(err.Error(), "field:"+v1alpha1.PhaseField) {
			err = fmt.Errorf("%w (a client reading from an informer cache needs claim.IndexFields on that cache)", err)
		}
		return nil, fmt.Errorf("list idle runners of %s/%s: %w", namespace, environment, err)
	}
	candidates := list.Items
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })

	patch, err := Patch(opts, time.Now())
	if err != nil {
		return nil, err
	}
	for i := range candidates {
		rn := &candidates[i]
		if rn.Status.Phase != v1alpha1.RunnerIdle || !rn.DeletionTimestamp.IsZero() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("claim a runner of %s/%s: %w", namespace, environment, err)
		}
		key := takenKey(rn)
		if !taken.take(key, time.Now()) {
			stats.Skipped++
			continue
		}
		held, err := claimRunner(ctx, c, rn, patch, opts.Token, stats)
		switch {
		case err == nil:
			return held, nil
		case errors.Is(err, errTaken):
			stats.Conflicts++ // taken by someone else: it stays marked
			continue
		default:
			taken.forget(key)
			return nil, fmt.Errorf("claim runner %s/%s: %w", namespace, rn.Name, err)
		}
	}
	return nil, fmt.Errorf("claim a runner of %s/%s: %w", namespace, environment, ErrNoIdleRunner)
}

// errTaken: the candidate is someone else's (or gone); try the next one.
var errTaken = errors.New("runner taken by another claimer")

// How hard a claim, renew or release tries when the API server's answer is lost.
const (
	// maxSends bounds the patches (or deletes) sent to one runner.
	maxSends = 3
	// maxReads bounds the reads back after a lost answer.
	maxReads = 5
	// readBackFor bounds the time spent reading back, even past the caller's ctx.
	readBackFor = 10 * time.Second
	// firstBackoff is the pause before the first retry; it doubles each time.
	firstBackoff = 100 * time.Millisecond
)

// claimRunner sends the claim patch to one candidate. It returns the runner as
// stored if the claim is ours, errTaken if another claimer has it or it is gone,
// or the error that left it unknown whether our claim was stored. In that last
// case a patch of ours may still land later; the claim's inactivity timeout is
// what then returns the runner to the pool.
func claimRunner(ctx context.Context, c client.Client, rn *v1alpha1.Runner, patch []byte, token string, stats *Stats) (*v1alpha1.Runner, error) {
	var unknown error // the last failure that may have stored our claim
	for send := 1; ; send++ {
		stats.Patches++
		err := c.Status().Patch(ctx, rn, client.RawPatch(types.JSONPatchType, patch))
		switch {
		case err == nil:
			return rn, nil
		case lostRace(err) && unknown == nil:
			return nil, errTaken
		case lostRace(err):
			// Perhaps refused because an earlier send of ours took it: read back.
		case maybeApplied(err):
			unknown = err
		case apierrors.IsForbidden(err):
			// The admission policies refuse a claim on a runner being deleted
			// (a scale-down the list did not show yet): another candidate may
			// do. Any other refusal (RBAC, say) is the caller's to see.
			stats.ReadBacks++
			current, readErr := readBack(ctx, c, rn)
			if readErr == nil && outcomeOf(current, token) == claimHeld {
				return current, nil
			}
			if readErr == nil && outcomeOf(current, token) == claimTaken {
				return nil, errTaken
			}
			return nil, err
		default:
			return nil, err
		}
		stats.ReadBacks++
		current, readErr := readBack(ctx, c, rn)
		if readErr != nil {
			return nil, fmt.Errorf("%w (reading the runner back to learn whether the claim was stored: %v)", unknown, readErr)
		}
		switch outcomeOf(current, token) {
		case claimHeld:
			return current, nil
		case claimTaken:
			return nil, errTaken
		}
		// Still Idle: our patch was not stored, or is still on its way. Sending
		// it again is safe: both test the phase is Idle, so at most one lands,
		// and either makes us the holder.
		if send >= maxSends || ctx.Err() != nil {
			return nil, unknown
		}
		if err := sleep(ctx, backoff(send)); err != nil {
			return nil, unknown
		}
	}
}

// claimOutcome is what a runner read back after a lost answer says of our claim.
type claimOutcome int

const (
	// claimHeld: the runner carries our token; the claim was stored.
	claimHeld claimOutcome = iota
	// claimTaken: gone, terminating, or no longer Idle under another claim (or
	// none): our claim can never land on it, since it tests the phase is Idle.
	claimTaken
	// claimStillIdle: nobody holds it; our claim was not stored (yet).
	claimStillIdle
)

func outcomeOf(current *v1alpha1.Runner, token string) claimOutcome {
	switch {
	case current == nil:
		return claimTaken
	case current.Status.Claim != nil && current.Status.Claim.Token == token:
		return claimHeld
	case current.Status.Phase == v1alpha1.RunnerIdle && current.DeletionTimestamp.IsZero():
		return claimStillIdle
	default:
		return claimTaken
	}
}

// readBack reads the runner from the API server, never from a cache (see
// Claim), retrying failures that may pass. A runner that is gone is nil.
// It runs on past ctx's end (bounded by readBackFor): the caller's deadline
// may be what cut off the answer we need to learn about.
func readBack(ctx context.Context, c client.Client, rn *v1alpha1.Runner) (*v1alpha1.Runner, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readBackFor)
	defer cancel()
	for read := 1; ; read++ {
		current := &v1alpha1.Runner{}
		err := c.SubResource("status").Get(rctx, rn, current)
		switch {
		case err == nil:
			return current, nil
		case apierrors.IsNotFound(err):
			return nil, nil
		case !maybeApplied(err) || read >= maxReads:
			return nil, fmt.Errorf("read runner %s/%s: %w", rn.Namespace, rn.Name, err)
		}
		if sleep(rctx, backoff(read)) != nil {
			return nil, fmt.Errorf("read runner %s/%s: %w", rn.Namespace, rn.Name, err)
		}
	}
}

// backoff is the pause after the n-th failed attempt (n from 1).
func backoff(n int) time.Duration {
	return firstBackoff << min(n-1, 4)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maybeApplied tells the failures of a write after which the API server may
// have stored it: no answer at all (a broken connection, a client timeout, the
// caller's deadline while the request was out) or a 5xx, which the API server or
// a proxy in front of it can send after etcd took the write (a "server timeout",
// a 504 Timeout that "may still be processing the request"). A 4xx is a refusal
// of the request as a whole: nothing was stored. A connection that was never
// made carried nothing either. The same failures are the passing ones worth
// retrying for a read.
func maybeApplied(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		if s.Code >= 500 {
			return true
		}
		switch s.Reason {
		case metav1.StatusReasonTimeout, metav1.StatusReasonServerTimeout,
			metav1.StatusReasonInternalError, metav1.StatusReasonServiceUnavailable:
			return true
		}
		return false
	}
	return !neverSent(err)
}

// neverSent tells transport failures that happen before a request leaves: the
// connection was refused or the host name did not resolve.
func neverSent(err error) bool {
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr)
}

// taken remembers the runners this process's claims patched in the last
// takenFor. A claimer service's informer cache still shows a runner Idle for
// a moment after one of its goroutines took it; without this, its racing
// goroutines would each spend a refused patch to learn so. Other processes'
// claims are still caught by the patch's test op.
var taken = &takenSet{until: map[string]time.Time{}}

// takenFor outlasts any watch delay a healthy cache has.
const takenFor = 10 * time.Second

type takenSet struct {
	mu    sync.Mutex
	until map[string]time.Time
	swept time.Time
}

// take marks a runner as claimed by this process; false if it already was
// within takenFor.
func (s *takenSet) take(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.swept) > takenFor { // claimed runners never come back: drop their marks
		for k, t := range s.until {
			if now.After(t) {
				delete(s.until, k)
			}
		}
		s.swept = now
	}
	if t, ok := s.until[key]; ok && now.Before(t) {
		return false
	}
	s.until[key] = now.Add(takenFor)
	return true
}

// forget unmarks a runner whose claim failed for another reason than a
// faster claimer (it may still be Idle).
func (s *takenSet) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.until, key)
}

func takenKey(rn *v1alpha1.Runner) string {
	if rn.UID != "" {
		return string(rn.UID)
	}
	return rn.Namespace + "/" + rn.Name
}

// IndexFields registers on an informer cache the field index Claim lists with
// (status.phase), so a claimer service can claim through a cache-backed client
// (client.Options.Cache): each claim then costs one API write and no list on
// the API server. Call it before the cache starts. A direct client needs
// nothing: the API server selects on the field itself.
func IndexFields(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &v1alpha1.Runner{}, v1alpha1.PhaseField, func(o client.Object) []string {
		if rn, ok := o.(*v1alpha1.Runner); ok && rn.Status.Phase != "" {
			return []string{string(rn.Status.Phase)}
		}
		return nil
	})
}

// lostRace tells the answers that mean "someone else was faster": the test op
// failed (a bare 422 with no causes), the runner is gone, or it changed.
func lostRace(err error) bool {
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return true
	}
	var status apierrors.APIStatus
	if apierrors.IsInvalid(err) && errors.As(err, &status) {
		d := status.Status().Details
		// CEL and schema rejections name a field; a failed test op names none.
		return d == nil || len(d.Causes) == 0
	}
	return false
}

// timeoutSeconds is what a claim stores as inactivityTimeoutSeconds for the
// caller's InactivityTimeout: 0 (the zero value) is the finite default, a
// negative value is "never" (0 in the API), and a fraction of a second rounds up
// so that a tiny timeout never turns into "never". Values past the API's maximum
// are clamped only as far as int32 goes: the API server refuses them, loudly.
func timeoutSeconds(d time.Duration) int32 {
	switch {
	case d == 0:
		d = DefaultInactivityTimeout
	case d < 0:
		return 0
	}
	secs := d / time.Second
	if d%time.Second != 0 {
		secs++
	}
	if secs > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(secs)
}

// Patch is the JSON patch a claim sends to a Runner's status subresource: it
// tests that the stored phase is Idle, sets phase Claimed, and adds the claim of
// opts.Holder and opts.Token (taken as given: Claim fills an empty token
// first), claimed at now (UTC, whole seconds), with opts.InactivityTimeout as
// Options documents it. Whoever claims one chosen runner without Claim (a
// tool, a test) sends these bytes, so the API server sees one claim shape.
func Patch(opts Options, now time.Time) ([]byte, error) {
	claim := v1alpha1.RunnerClaim{
		Holder:                   opts.Holder,
		Token:                    opts.Token,
		ClaimedAt:                metav1.NewTime(now.UTC().Truncate(time.Second)),
		InactivityTimeoutSeconds: timeoutSeconds(opts.InactivityTimeout),
	}
	return json.Marshal([]map[string]any{
		{"op": "test", "path": "/status/phase", "value": v1alpha1.RunnerIdle},
		{"op": "replace", "path": "/status/phase", "value": v1alpha1.RunnerClaimed},
		{"op": "add", "path": "/status/claim", "value": claim},
	})
}

// Renew records activity on a claimed runner, pushing its inactivity deadline
// back. It fails with ErrNotHolder if the runner is held with another token.
// A renew whose answer was lost is sent again (a few times): storing it twice
// only moves lastActivityTime once more.
func Renew(ctx context.Context, c client.Client, rn *v1alpha1.Runner, token string) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/status/claim/token", "value": token},
		{"op": "add", "path": "/status/claim/lastActivityTime", "value": metav1.NewTime(time.Now().UTC().Truncate(time.Second))},
	})
	if err != nil {
		return err
	}
	for send := 1; ; send++ {
		err = c.Status().Patch(ctx, rn, client.RawPatch(types.JSONPatchType, patch))
		if !maybeApplied(err) || send >= maxSends || sleep(ctx, backoff(send)) != nil {
			break
		}
	}
	if err != nil && lostRace(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("renew runner %s/%s: %w", rn.Namespace, rn.Name, ErrNotHolder)
	}
	if err != nil {
		return fmt.Errorf("renew runner %s/%s: %w", rn.Namespace, rn.Name, err)
	}
	return nil
}

// Release gives a claimed runner back: it deletes it (the operator purges its
// Nomad job and refills the pool). Only the holder of token may release; a
// runner already gone, or already being deleted, is released. It reads the
// runner from the API server as Claim's read back does (a cache may not show the
// claim yet) and sends the delete again when its answer was lost: deleting
// twice is harmless.
func Release(ctx context.Context, c client.Client, rn *v1alpha1.Runner, token string) error {
	for send := 1; ; send++ {
		current := &v1alpha1.Runner{}
		err := c.SubResource("status").Get(ctx, rn, current)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil && maybeApplied(err) && send < maxSends:
			if sleep(ctx, backoff(send)) != nil {
				return fmt.Errorf("release runner %s/%s: read it: %w", rn.Namespace, rn.Name, err)
			}
			continue
		case err != nil:
			return fmt.Errorf("release runner %s/%s: read it: %w", rn.Namespace, rn.Name, err)
		}
		if current.Status.Claim == nil || current.Status.Claim.Token != token {
			return fmt.Errorf("release runner %s/%s: %w", rn.Namespace, rn.Name, ErrNotHolder)
		}
		if !current.DeletionTimestamp.IsZero() {
			return nil // an earlier delete (ours, or the operator's) is under way
		}
		// The token cannot change once set (a CEL rule), so the UID is precondition enough.
		err = c.Delete(ctx, current, client.Preconditions{UID: &current.UID})
		switch {
		case err == nil || apierrors.IsNotFound(err):
			return nil
		case maybeApplied(err) && send < maxSends:
			if sleep(ctx, backoff(send)) != nil {
				return fmt.Errorf("release runner %s/%s: %w", rn.Namespace, rn.Name, err)
			}
		default:
			return fmt.Errorf("release runner %s/%s: %w", rn.Namespace, rn.Name, err)
		}
	}
}
