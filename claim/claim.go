// Package claim is the client side of the claim protocol: take an idle Runner of
// an ExecutionEnvironment exactly once, keep it alive, give it back.
//
// A claim is one JSON patch of the Runner's status subresource that tests the
// stored phase is Idle and sets phase Claimed plus the claim. The API server
// evaluates the test against the stored object, so of two racing claimers exactly
// one wins; CEL rules on the CRD refuse any other way of taking a runner. No
// controller is in the claim path: a claim costs one API write.
package claim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
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

// Options of a claim.
type Options struct {
	// Holder names who claims (a user, a session); required.
	Holder string
	// Token identifies this claim; a fresh UUID when empty. Keep it: Renew and
	// Release take it, so a restarted client never acts on an older claim.
	Token string
	// InactivityTimeout: the operator deletes the runner after this long without
	// a Renew. 0 means never. Whole seconds.
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
}

// Claim takes one idle runner of the environment and returns it as stored after
// the claim. It tries the idle runners in random order, so racing claimers rarely
// pick the same one; a candidate taken meanwhile is skipped. With no idle runner
// it returns ErrNoIdleRunner, or with opts.Wait keeps trying until ctx ends.
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

	patch, err := claimPatch(opts, time.Now())
	if err != nil {
		return nil, err
	}
	for i := range candidates {
		rn := &candidates[i]
		if rn.Status.Phase != v1alpha1.RunnerIdle || !rn.DeletionTimestamp.IsZero() {
			continue
		}
		key := takenKey(rn)
		if !taken.take(key, time.Now()) {
			stats.Skipped++
			continue
		}
		stats.Patches++
		err := c.Status().Patch(ctx, rn, client.RawPatch(types.JSONPatchType, patch))
		switch {
		case err == nil:
			return rn, nil
		case lostRace(err):
			stats.Conflicts++ // taken by someone else: it stays marked
			continue
		default:
			taken.forget(key)
			return nil, fmt.Errorf("claim runner %s/%s: %w", namespace, rn.Name, err)
		}
	}
	return nil, fmt.Errorf("claim a runner of %s/%s: %w", namespace, environment, ErrNoIdleRunner)
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

func claimPatch(opts Options, now time.Time) ([]byte, error) {
	claim := v1alpha1.RunnerClaim{
		Holder:                   opts.Holder,
		Token:                    opts.Token,
		ClaimedAt:                metav1.NewTime(now.UTC().Truncate(time.Second)),
		InactivityTimeoutSeconds: int32(opts.InactivityTimeout / time.Second),
	}
	return json.Marshal([]map[string]any{
		{"op": "test", "path": "/status/phase", "value": v1alpha1.RunnerIdle},
		{"op": "replace", "path": "/status/phase", "value": v1alpha1.RunnerClaimed},
		{"op": "add", "path": "/status/claim", "value": claim},
	})
}

// Renew records activity on a claimed runner, pushing its inactivity deadline
// back. It fails with ErrNotHolder if the runner is held with another token.
func Renew(ctx context.Context, c client.Client, rn *v1alpha1.Runner, token string) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/status/claim/token", "value": token},
		{"op": "add", "path": "/status/claim/lastActivityTime", "value": metav1.NewTime(time.Now().UTC().Truncate(time.Second))},
	})
	if err != nil {
		return err
	}
	err = c.Status().Patch(ctx, rn, client.RawPatch(types.JSONPatchType, patch))
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
// runner already gone is released.
func Release(ctx context.Context, c client.Client, rn *v1alpha1.Runner, token string) error {
	current := &v1alpha1.Runner{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rn), current); err != nil {
		return client.IgnoreNotFound(err)
	}
	if current.Status.Claim == nil || current.Status.Claim.Token != token {
		return fmt.Errorf("release runner %s/%s: %w", rn.Namespace, rn.Name, ErrNotHolder)
	}
	// The token cannot change once set (a CEL rule), so the UID is precondition enough.
	err := c.Delete(ctx, current, client.Preconditions{UID: &current.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("release runner %s/%s: %w", rn.Namespace, rn.Name, err)
	}
	return nil
}
