package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func runnerWithJob(name, jobID string) *v1alpha1.Runner {
	return &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "ns", Annotations: map[string]string{v1alpha1.JobIDAnnotation: jobID},
	}}
}

// The event source maps a job to its Runner through the cache's job-ID index,
// spares a Runner being deleted its own purge coming back, and resyncs every
// Runner.
func TestNomadEventSourceMapsJobsToRunners(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	jobA, jobB, jobC := nomadbridge.NewRunnerJobID("python"), nomadbridge.NewRunnerJobID("python"), nomadbridge.NewRunnerJobID("python")
	deleting := runnerWithJob("python-c", jobC)
	deleting.Finalizers = []string{v1alpha1.RunnerFinalizer}
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	reader := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(runnerWithJob("python-a", jobA), runnerWithJob("python-b", jobB), deleting).
		WithIndex(&v1alpha1.Runner{}, jobIDIndex, func(o client.Object) []string {
			return []string{o.GetAnnotations()[v1alpha1.JobIDAnnotation]}
		}).Build()
	out := make(chan event.GenericEvent, 16)
	s := &NomadEventSource{Reader: reader, Out: out}
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		tell func()
		want []string
	}{
		{"a job event enqueues its runner", func() { s.JobChanged(ctx, jobA, false) }, []string{"python-a"}},
		{"a deregistration enqueues a live runner", func() { s.JobChanged(ctx, jobB, true) }, []string{"python-b"}},
		{"a job event enqueues a runner being deleted", func() { s.JobChanged(ctx, jobC, false) }, []string{"python-c"}},
		{"a deregistration spares a runner being deleted", func() { s.JobChanged(ctx, jobC, true) }, nil},
		{"a job no runner names enqueues nothing", func() { s.JobChanged(ctx, nomadbridge.NewRunnerJobID("python"), false) }, nil},
		{"a resync enqueues every runner", func() { s.Resync(ctx) }, []string{"python-a", "python-b", "python-c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tell()
			var got []string
			for len(out) > 0 {
				got = append(got, (<-out).Object.GetName())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("enqueued %v, want %v", got, tc.want)
			}
		})
	}
}
