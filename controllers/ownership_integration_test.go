package controllers_test

import (
	"context"
	"fmt"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// forgedRunner is a Runner the operator did not make, whose annotations name
// a Nomad job it does not own, made to look like the environment's own
// (controlled by it, a job ID of the environment's form) so that it gets past
// the check of who made it. It carries no environment label, so the
// environment's pool does not count it; its spec matches the environment's
// current template, so the Runner controller does try to register its job.
func forgedRunner(ee *v1alpha1.ExecutionEnvironment, name, jobID string) *v1alpha1.Runner {
	return &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ee.Namespace, Name: name,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ee, v1alpha1.GroupVersion.WithKind("ExecutionEnvironment"))},
			Annotations:     map[string]string{v1alpha1.JobIDAnnotation: jobID, v1alpha1.NomadNamespaceAnnotation: "default"},
			Finalizers:      []string{v1alpha1.RunnerFinalizer},
		},
		Spec: v1alpha1.RunnerSpec{Environment: "python", TemplateHash: ee.Status.TemplateHash},
	}
}

// foreignWarnings returns the notes of the ForeignNomadJob events of a runner.
func foreignWarnings(ctx context.Context, g Gomega, ns, runner string) []string {
	list := &eventsv1.EventList{}
	g.Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	var notes []string
	for _, ev := range list.Items {
		if ev.Reason == v1alpha1.EventReasonForeignNomadJob && ev.Regarding.Name == runner && ev.Type == "Warning" {
			notes = append(notes, ev.Action+": "+ev.Note)
		}
	}
	return notes
}

var _ = Describe("Runners naming jobs they do not own", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	It("neither adopt nor purge another runner's job or a foreign job, and are deleted all the same", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		victim := expectIdlePool(ctx, ns, "python", 1, 0)[0]
		ee := &v1alpha1.ExecutionEnvironment{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "python"}, ee)).To(Succeed())

		// A job of this operator instance, but of the victim runner: the job
		// store knows it from its listing and events.
		victimJob, _, err := nomadAPI.Jobs().Info(victim.Status.NomadJobID, nil)
		Expect(err).NotTo(HaveOccurred())
		// And a job with no runner meta at all (under an ID of the runners' form).
		foreignID := nomadbridge.NewRunnerJobID("python")
		_, _, err = nomadAPI.Jobs().Register(nomaddev.SleepJob(foreignID, map[string]string{"team": "payments"}), nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _, _ = nomadAPI.Jobs().Deregister(foreignID, true, nil) })
		foreignJob, _, err := nomadAPI.Jobs().Info(foreignID, nil)
		Expect(err).NotTo(HaveOccurred())

		forged := map[string]*nomad.Job{"python-forged-a": victimJob, "python-forged-b": foreignJob}
		for name, job := range forged {
			Expect(k8sClient.Create(ctx, forgedRunner(ee, name, *job.ID))).To(Succeed())
		}

		By("refusing to register or adopt their jobs, with a Warning Event")
		for name, job := range forged {
			Eventually(func(g Gomega) {
				g.Expect(foreignWarnings(ctx, g, ns, name)).To(ContainElement(And(
					HavePrefix("Register: "), ContainSubstring(*job.ID))))
			}).WithTimeout(60*time.Second).Should(Succeed(), "runner %s", name)
			rn := &v1alpha1.Runner{}
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, rn)).To(Succeed())
			Expect(rn.Status.NomadJobID).To(BeEmpty(), "runner %s adopted %s", name, *job.ID)
			Expect(rn.Status.AllocationID).To(BeEmpty())
			Expect(rn.Status.Phase).NotTo(Equal(v1alpha1.RunnerIdle))
		}

		By("deleting them without purging their jobs")
		for name := range forged {
			Expect(k8sClient.Delete(ctx, &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})).To(Succeed())
		}
		for name, job := range forged {
			Eventually(func(g Gomega) {
				err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &v1alpha1.Runner{})
				g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "runner %s: %v", name, err)
			}).WithTimeout(60 * time.Second).Should(Succeed())
			Eventually(func(g Gomega) {
				g.Expect(foreignWarnings(ctx, g, ns, name)).To(ContainElement(And(
					HavePrefix("Delete: "), ContainSubstring(*job.ID))))
			}).Should(Succeed())
			after, _, err := nomadAPI.Jobs().Info(*job.ID, nil)
			Expect(err).NotTo(HaveOccurred(), "job %s must survive the deletion of %s", *job.ID, name)
			Expect(*after.Stop).To(BeFalse())
			Expect(*after.JobModifyIndex).To(Equal(*job.JobModifyIndex), fmt.Sprintf("job %s was changed", *job.ID))
		}

		By("leaving the victim runner Idle on its own allocation")
		expectIdlePool(ctx, ns, "python", 1, 0)
		rn := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&victim), rn)).To(Succeed())
		Expect(rn.Status.AllocationID).To(Equal(victim.Status.AllocationID))
	}, SpecTimeout(180*time.Second))
})
