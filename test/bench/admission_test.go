package bench

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

// TestAdmissionCost measures what the shipped admission policies add to a
// claim: the same claim patch on the same kind of Idle runner, sent by an
// admin (whom the validating policy skips: it only matches non-operators) and
// by a user bound to the claimer role (every rule evaluated, plus its
// authorizer checks), interleaved one by one so both see the same machine.
// The mutating policy stamps both. A third arm, with the policies' bindings
// removed, runs after them for the whole admission cost. No operator and no
// Nomad: runners are made Idle by hand, so only the API server is measured.
func TestAdmissionCost(t *testing.T) {
	if os.Getenv("NRO_BENCH") == "" {
		t.Skip("benchmarks run with NRO_BENCH=1 (make bench-admission)")
	}
	n := envInt("BENCH_ADMISSION_CLAIMS", 400)
	ctx := context.Background()
	cp, err := controlplane.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	claimerCfg, err := claimerConfig(ctx, cp, root)
	if err != nil {
		t.Fatal(err)
	}
	claimer, err := client.New(claimerCfg, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	admin := cp.Client

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-admission"}}
	if err := admin.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	idle := func(count int) []*v1alpha1.Runner {
		out := make([]*v1alpha1.Runner, count)
		if err := parallel(8, count, func(i int) error {
			rn := &v1alpha1.Runner{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, GenerateName: "adm-"},
				Spec:       v1alpha1.RunnerSpec{Environment: "adm"},
			}
			if err := admin.Create(ctx, rn); err != nil {
				return err
			}
			rn.Status.Phase = v1alpha1.RunnerIdle
			out[i] = rn
			return admin.Status().Update(ctx, rn)
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	claimOne := func(c client.Client, rn *v1alpha1.Runner) (time.Duration, error) {
		patch, err := claim.Patch(claim.Options{Holder: "bench", Token: uuid.NewString()}, time.Now())
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		err = c.Status().Patch(ctx, rn, client.RawPatch(types.JSONPatchType, patch))
		return time.Since(t0), err
	}

	runners := idle(2 * n)
	var asAdmin, asClaimer []time.Duration
	for i := 0; i < n; i++ {
		// Alternate who goes first, so neither arm always follows the other.
		first, second := admin, claimer
		if i%2 == 1 {
			first, second = claimer, admin
		}
		d1, err := claimOne(first, runners[2*i])
		if err != nil {
			t.Fatal(err)
		}
		d2, err := claimOne(second, runners[2*i+1])
		if err != nil {
			t.Fatal(err)
		}
		if first == admin {
			asAdmin, asClaimer = append(asAdmin, d1), append(asClaimer, d2)
		} else {
			asAdmin, asClaimer = append(asAdmin, d2), append(asClaimer, d1)
		}
	}
	// The first pair went admin, then claimer: the claimer's claim names it.
	stored := &v1alpha1.Runner{}
	if err := admin.Get(ctx, client.ObjectKeyFromObject(runners[1]), stored); err != nil || stored.Status.Claim == nil || stored.Status.Claim.User != "bench-claimer" {
		t.Fatalf("the claimer's claim was not stamped with its user: %+v %v", stored.Status.Claim, err)
	}

	// Without the policies: remove their bindings and wait until a claim
	// by the claimer is no longer stamped with its user.
	objs, err := controlplane.PolicyObjects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "ValidatingAdmissionPolicyBinding" || o.GetKind() == "MutatingAdmissionPolicyBinding" {
			if err := admin.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	probe := idle(1)[0]
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		p := fmt.Sprintf(`{"status":{"message":"probe %s"}}`, uuid.NewString())
		if claimer.Status().Patch(ctx, probe.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(p))) == nil {
			break // a status write the validating policy would refuse went through
		}
		if time.Now().After(deadline) {
			t.Fatal("the policies stayed in force 30s after their bindings were deleted")
		}
	}
	var without []time.Duration
	for _, rn := range idle(n) {
		d, err := claimOne(claimer, rn)
		if err != nil {
			t.Fatal(err)
		}
		without = append(without, d)
	}

	p := func(ds []time.Duration, q float64) float64 {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	t.Logf("claims of one runner each, %d per arm, one at a time (ms):", n)
	t.Logf("| arm | p50 | p90 | p99 |")
	t.Logf("| --- | --- | --- | --- |")
	for _, arm := range []struct {
		name string
		ds   []time.Duration
	}{
		{"admin (validating policy skipped; mutating policy applied), interleaved", asAdmin},
		{"claimer-role user (both policies), interleaved", asClaimer},
		{"claimer-role user, policies unbound (after the two above)", without},
	} {
		t.Logf("| %s | %.2f | %.2f | %.2f |", arm.name, p(arm.ds, 0.5), p(arm.ds, 0.9), p(arm.ds, 0.99))
	}
	t.Logf("ratios: claimer/admin p50 %.3f p99 %.3f; claimer with/without policies p50 %.3f p99 %.3f",
		p(asClaimer, 0.5)/p(asAdmin, 0.5), p(asClaimer, 0.99)/p(asAdmin, 0.99),
		p(asClaimer, 0.5)/p(without, 0.5), p(asClaimer, 0.99)/p(without, 0.99))
}
