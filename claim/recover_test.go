package claim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func TestMaybeAppliedTellsLostAnswersFromRefusals(t *testing.T) {
	gr := schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "runners"}
	patchURL := "https://127.0.0.1:6443/apis/execution.nomadrunner.io/v1alpha1/namespaces/ns/runners/r/status"
	transport := func(err error) error { return &url.Error{Op: "Patch", URL: patchURL, Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},

		// Refusals: the API server judged the request and stored nothing.
		{"failed test op (422, no causes)", apierrors.NewGenericServerResponse(422, "PATCH", gr, "r", "the server rejected our request due to an error in our request", 0, false), false},
		{"CEL rejection (422 with causes)", apierrors.NewInvalid(schema.GroupKind{Group: gr.Group, Kind: "Runner"}, "r",
			field.ErrorList{field.Invalid(field.NewPath("status", "phase"), "Claimed", "a Claimed runner can only become Failed")}), false},
		{"not found", apierrors.NewNotFound(gr, "r"), false},
		{"conflict", apierrors.NewConflict(gr, "r", errors.New("the object has been modified")), false},
		{"forbidden", apierrors.NewForbidden(gr, "r", errors.New("RBAC")), false},
		{"unauthorized", apierrors.NewUnauthorized("who are you"), false},
		{"bad request", apierrors.NewBadRequest("bad patch"), false},
		{"too many requests (refused before processing)", apierrors.NewTooManyRequests("slow down", 1), false},
		{"refusal wrapped by a caller", fmt.Errorf("claim runner ns/r: %w", apierrors.NewNotFound(gr, "r")), false},

		// Server-side failures that can come after etcd stored the write.
		{"internal error", apierrors.NewInternalError(errors.New("boom")), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), true},
		{"504 timeout, may still be processing", apierrors.NewTimeoutError("request did not complete within 60s", 0), true},
		{"service unavailable", apierrors.NewServiceUnavailable("apiserver is shutting down"), true},
		{"bad gateway from a proxy", apierrors.NewGenericServerResponse(502, "PATCH", gr, "r", "<html>502</html>", 0, true), true},
		{"gateway timeout from a proxy", apierrors.NewGenericServerResponse(504, "PATCH", gr, "r", "", 0, true), true},
		{"5xx wrapped by a caller", fmt.Errorf("claim runner ns/r: %w", apierrors.NewInternalError(errors.New("boom"))), true},

		// No answer at all: the request may have been applied.
		{"connection reset", transport(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"connection closed mid-response", transport(io.ErrUnexpectedEOF), true},
		{"EOF", transport(io.EOF), true},
		{"client timeout", transport(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}), true},
		{"caller's deadline while the request was out", transport(context.DeadlineExceeded), true},
		{"caller cancelled while the request was out", transport(context.Canceled), true},
		{"an error of unknown kind", errors.New("something odd"), true},

		// Never sent: nothing reached the API server.
		{"connection refused", transport(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), false},
		{"host name did not resolve", transport(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.example"}}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maybeApplied(tc.err); got != tc.want {
				t.Fatalf("maybeApplied(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestOutcomeOfAReadBack(t *testing.T) {
	now := metav1.Now()
	runner := func(phase v1alpha1.RunnerPhase, token string, deleting bool) *v1alpha1.Runner {
		rn := &v1alpha1.Runner{Status: v1alpha1.RunnerStatus{Phase: phase}}
		if token != "" {
			rn.Status.Claim = &v1alpha1.RunnerClaim{Holder: "h", Token: token}
		}
		if deleting {
			rn.DeletionTimestamp = &now
		}
		return rn
	}
	for _, tc := range []struct {
		name    string
		current *v1alpha1.Runner
		want    claimOutcome
	}{
		{"gone", nil, claimTaken},
		{"claimed with our token", runner(v1alpha1.RunnerClaimed, "ours", false), claimHeld},
		{"ours, then failed: still ours to see and release", runner(v1alpha1.RunnerFailed, "ours", false), claimHeld},
		{"ours and being deleted", runner(v1alpha1.RunnerClaimed, "ours", true), claimHeld},
		{"claimed by someone else", runner(v1alpha1.RunnerClaimed, "theirs", false), claimTaken},
		{"still idle", runner(v1alpha1.RunnerIdle, "", false), claimStillIdle},
		{"idle but being deleted: a claim cannot land", runner(v1alpha1.RunnerIdle, "", true), claimTaken},
		{"failed unclaimed", runner(v1alpha1.RunnerFailed, "", false), claimTaken},
		{"pending", runner(v1alpha1.RunnerPending, "", false), claimTaken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := outcomeOf(tc.current, "ours"); got != tc.want {
				t.Fatalf("outcomeOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTimeoutSecondsDefaultsToFiniteAndOptsOutExplicitly(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   time.Duration
		want int32
	}{
		{"unset: the finite default", 0, int32(DefaultInactivityTimeout / time.Second)},
		{"NoInactivityTimeout: never", NoInactivityTimeout, 0},
		{"any negative: never", -time.Hour, 0},
		{"whole seconds", time.Hour, 3600},
		{"a fraction rounds up, never to 'never'", 500 * time.Millisecond, 1},
		{"a fraction above a second rounds up", 1500 * time.Millisecond, 2},
		{"beyond int32 clamps (the API server refuses it)", time.Duration(math.MaxInt64), math.MaxInt32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := timeoutSeconds(tc.in); got != tc.want {
				t.Fatalf("timeoutSeconds(%v) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
	if DefaultInactivityTimeout <= 0 {
		t.Fatal("the default inactivity timeout must be finite")
	}
}

func TestBackoffDoublesAndIsBounded(t *testing.T) {
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 1600 * time.Millisecond}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Fatalf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}
