package controllers

import (
	"context"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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
	why   string
	asked int
}

func (b *placementBridge) PlacementFailure(context.Context, string, string) (string, error) {
	b.asked++
	return b.why, nil
}

func (b *placementBridge) AllocationPorts(context.Context, string, string) ([]nomad.PortMapping, error) {
	return nil, nil
}

// A runner that starts within the placement grace costs one status write
// (Pending→Idle); one still Pending when the grace ends is written then, with
// Nomad's reason when it cannot be placed.
func TestRunnerStatusIsWrittenAtMilestonesOnly(t *testing.T) {
	created := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	newRunner := func(name, jobID string) *v1alpha1.Runner {
		return &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: "ns", CreationTimestamp: metav1.NewTime(created),
				Annotations: map[string]string{JobIDAnnotation: jobID, NomadNamespaceAnnotation: "default"},
				Finalizers:  []string{RunnerFinalizer},
			},
			Spec: v1alpha1.RunnerSpec{Environment: "env", TemplateHash: "h"},
			// What the API server shows before any status write (the schema default).
			Status: v1alpha1.RunnerStatus{Phase: v1alpha1.RunnerPending},
		}
	}
	alloc := func(id, job string, index uint64, status string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{ID: id, JobID: job, NodeName: "node-1", ModifyIndex: index, CreateIndex: index, ClientStatus: status}
	}
	fast, slow, stuck := newRunner("fast", "env-fast"), newRunner("slow", "env-slow"), newRunner("stuck", "env-stuck")

	statusWrites := map[string]int{}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.Runner{}).
		WithObjects(fast, slow, stuck).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				statusWrites[obj.GetName()]++
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	// The jobs were registered already (a store that knows them skips the
	// registration): the reconciles below only observe their allocations.
	store := NewJobStore()
	store.Replace([]nomadbridge.JobRef{{ID: "env-fast"}, {ID: "env-slow"}, {ID: "env-stuck"}},
		[]*nomad.AllocationListStub{alloc("a-fast", "env-fast", 10, nomad.AllocClientStatusPending), alloc("a-slow", "env-slow", 10, nomad.AllocClientStatusPending)})
	bridge := &placementBridge{why: "Resources exhausted on 1 nodes: memory"}
	clk := clocktesting.NewFakePassiveClock(created.Add(time.Second))
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

	// 1 s old, placed, not running yet: nothing written, a look back when the grace ends.
	for _, name := range []string{"fast", "slow", "stuck"} {
		res, rn := reconcileRunner(name)
		if statusWrites[name] != 0 || rn.Status.NomadJobID != "" {
			t.Fatalf("%s: %d status writes within the grace (status %+v), want none", name, statusWrites[name], rn.Status)
		}
		if res.RequeueAfter != placementGrace-time.Second {
			t.Fatalf("%s: requeue after %v, want the rest of the grace (%v)", name, res.RequeueAfter, placementGrace-time.Second)
		}
	}
	if bridge.asked != 0 {
		t.Fatalf("Nomad was asked %d times why a runner waits within the grace", bridge.asked)
	}

	// fast runs within the grace: one write, straight to Idle with everything observed.
	store.ObserveAllocation(alloc("a-fast", "env-fast", 11, nomad.AllocClientStatusRunning))
	_, rn := reconcileRunner("fast")
	if statusWrites["fast"] != 1 || rn.Status.Phase != v1alpha1.RunnerIdle || rn.Status.NomadJobID != "env-fast" ||
		rn.Status.AllocationID != "a-fast" || rn.Status.NodeName != "node-1" {
		t.Fatalf("fast: %d writes, status %+v; want one write to Idle with job, allocation and node", statusWrites["fast"], rn.Status)
	}

	// The grace is over: slow (placed, still starting) and stuck (not placed) are written as Pending.
	clk.SetTime(created.Add(placementGrace + time.Second))
	_, rn = reconcileRunner("slow")
	if statusWrites["slow"] != 1 || rn.Status.Phase != v1alpha1.RunnerPending || rn.Status.AllocationID != "a-slow" || rn.Status.Reason != "" {
		t.Fatalf("slow: %d writes, status %+v; want Pending with its allocation, no reason", statusWrites["slow"], rn.Status)
	}
	_, rn = reconcileRunner("stuck")
	if statusWrites["stuck"] != 1 || rn.Status.Phase != v1alpha1.RunnerPending || rn.Status.Reason != v1alpha1.ReasonWaitingForNomad ||
		rn.Status.Message != "Nomad cannot place the runner yet: Resources exhausted on 1 nodes: memory." || rn.Status.NomadJobID != "env-stuck" {
		t.Fatalf("stuck: %d writes, status %+v; want Pending, WaitingForNomad with Nomad's reason", statusWrites["stuck"], rn.Status)
	}

	// Nothing new: no further write.
	reconcileRunner("stuck")
	if statusWrites["stuck"] != 1 {
		t.Fatalf("stuck: %d writes after an idle reconcile, want still 1", statusWrites["stuck"])
	}
}
