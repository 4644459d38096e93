package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	nomad "github.com/hashicorp/nomad/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// placementBridge answers the two Nomad questions a starting runner may ask;
// any other call panics (the embedded nil interface): the store answers the rest.
type placementBridge struct {
	nomadbridge.Client
	why   map[string]string // by job ID
	asked map[string]int
}

func (b *placementBridge) PlacementFailure(_ context.Context, _, jobID string) (string, error) {
	b.asked[jobID]++
	return b.why[jobID], nil
}

func (b *placementBridge) AllocationPorts(context.Context, string, string) ([]nomad.PortMapping, error) {
	return nil, nil
}

// jobOf is the Nomad job ID of a test runner, of the form the operator makes.
func jobOf(name string) string {
	return "env-" + uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String()
}

// A runner that starts within startupQuiet costs one status write
// (Pending→Idle). Nomad is asked why an unplaced runner waits once the
// placement grace is over, and a reason is written at once; a runner still
// starting normally is written as Pending when startupQuiet ends.
func TestRunnerStatusIsWrittenAtMilestonesOnly(t *testing.T) {
	created := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "env", Namespace: "ns", UID: "env-uid"}}
	newRunner := func(name string) *v1alpha1.Runner {
		return &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: "ns", UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(created),
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(env, v1alpha1.GroupVersion.WithKind("ExecutionEnvironment"))},
				Annotations:     map[string]string{v1alpha1.JobIDAnnotation: jobOf(name), v1alpha1.NomadNamespaceAnnotation: "default"},
				Finalizers:      []string{v1alpha1.RunnerFinalizer},
			},
			Spec: v1alpha1.RunnerSpec{Environment: "env", TemplateHash: "h"},
			// What the API server shows before any status write (the schema default).
			Status: v1alpha1.RunnerStatus{Phase: v1alpha1.RunnerPending},
		}
	}
	alloc := func(id, job string, index uint64, status string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{ID: id, JobID: job, NodeName: "node-1", ModifyIndex: index, CreateIndex: index, ClientStatus: status}
	}
	// fast and slow are placed (fast will run soon, slow takes long);
	// stuck cannot be placed, queued is not placed yet without a failure.
	names := []string{"fast", "slow", "stuck", "queued"}
	var objs []client.Object
	var jobs []nomadbridge.JobRef
	for _, n := range names {
		objs = append(objs, newRunner(n))
		jobs = append(jobs, nomadbridge.JobRef{ID: jobOf(n), Meta: nomadbridge.RunnerMeta{UID: "uid-" + n}})
	}

	statusWrites := map[string]int{}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.Runner{}).
		WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				statusWrites[obj.GetName()]++
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	// The jobs were registered already (a store that knows them skips the
	// registration): the reconciles below only observe their allocations.
	clk := clocktesting.NewFakePassiveClock(created.Add(time.Second))
	store := nomadbridge.NewJobStore(clk)
	store.Replace(jobs, []*nomad.AllocationListStub{
		alloc("a-fast", jobOf("fast"), 10, nomad.AllocClientStatusPending), alloc("a-slow", jobOf("slow"), 10, nomad.AllocClientStatusPending)})
	bridge := &placementBridge{why: map[string]string{jobOf("stuck"): "Resources exhausted on 1 nodes: memory"}, asked: map[string]int{}}
	r := &RunnerReconciler{Client: c, Bridge: bridge, Clock: clk, Store: store, Recorder: &events.FakeRecorder{}}
	reconcileRunner := func(name string) (reconcile.Result, *v1alpha1.Runner) {
		t.Helper()
		res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "ns", Name: name}})
		if err != nil {
			t.Fatalf("reconcile %s: %v", name, err)
		}
		rn := &v1alpha1.Runner{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, rn); err != nil {
			t.Fatal(err)
		}
		return res, rn
	}
	expectHeld := func(name string, requeue time.Duration) {
		t.Helper()
		res, rn := reconcileRunner(name)
		if statusWrites[name] != 0 || rn.Status.NomadJobID != "" {
			t.Fatalf("%s: %d status writes (status %+v), want none yet", name, statusWrites[name], rn.Status)
		}
		if res.RequeueAfter != requeue {
			t.Fatalf("%s: requeue after %v, want %v", name, res.RequeueAfter, requeue)
		}
	}

	// 1 s old: nothing written. The placed ones are looked at again when the
	// quiet period ends, the unplaced ones when the placement grace does.
	expectHeld("fast", startupQuiet-time.Second)
	expectHeld("slow", startupQuiet-time.Second)
	expectHeld("stuck", placementGrace-time.Second)
	expectHeld("queued", placementGrace-time.Second)
	if len(bridge.asked) != 0 {
		t.Fatalf("Nomad was asked why runners wait within the placement grace: %v", bridge.asked)
	}

	// fast runs: one write, straight to Idle with everything observed.
	store.ObserveAllocation(alloc("a-fast", jobOf("fast"), 11, nomad.AllocClientStatusRunning))
	_, rn := reconcileRunner("fast")
	if statusWrites["fast"] != 1 || rn.Status.Phase != v1alpha1.RunnerIdle || rn.Status.NomadJobID != jobOf("fast") ||
		rn.Status.AllocationID != "a-fast" || rn.Status.NodeName != "node-1" {
		t.Fatalf("fast: %d writes, status %+v; want one write to Idle with job, allocation and node", statusWrites["fast"], rn.Status)
	}

	// The placement grace is over: stuck's reason is written at once; queued
	// (Nomad names no failure) and slow (placed, starting) stay unwritten.
	clk.SetTime(created.Add(placementGrace + time.Second))
	_, rn = reconcileRunner("stuck")
	if statusWrites["stuck"] != 1 || rn.Status.Phase != v1alpha1.RunnerPending || rn.Status.Reason != v1alpha1.ReasonWaitingForNomad ||
		rn.Status.Message != "Nomad cannot place the runner yet: Resources exhausted on 1 nodes: memory." || rn.Status.NomadJobID != jobOf("stuck") {
		t.Fatalf("stuck: %d writes, status %+v; want Pending, WaitingForNomad with Nomad's reason", statusWrites["stuck"], rn.Status)
	}
	expectHeld("queued", startupQuiet-placementGrace-time.Second)
	expectHeld("slow", startupQuiet-placementGrace-time.Second)
	if bridge.asked[jobOf("queued")] != 1 || bridge.asked[jobOf("slow")] != 0 {
		t.Fatalf("Nomad asked %v; want queued once, never for the placed slow", bridge.asked)
	}

	// The quiet period is over: the ones still starting are written as Pending.
	clk.SetTime(created.Add(startupQuiet + time.Second))
	_, rn = reconcileRunner("slow")
	if statusWrites["slow"] != 1 || rn.Status.Phase != v1alpha1.RunnerPending || rn.Status.AllocationID != "a-slow" || rn.Status.Reason != "" {
		t.Fatalf("slow: %d writes, status %+v; want Pending with its allocation, no reason", statusWrites["slow"], rn.Status)
	}
	_, rn = reconcileRunner("queued")
	if statusWrites["queued"] != 1 || rn.Status.Phase != v1alpha1.RunnerPending || rn.Status.NomadJobID != jobOf("queued") || rn.Status.Reason != "" {
		t.Fatalf("queued: %d writes, status %+v; want Pending with its job, no reason", statusWrites["queued"], rn.Status)
	}

	// Nothing new: no further write.
	reconcileRunner("stuck")
	reconcileRunner("slow")
	if statusWrites["stuck"] != 1 || statusWrites["slow"] != 1 {
		t.Fatalf("writes after reconciles that changed nothing: %v", statusWrites)
	}
}
