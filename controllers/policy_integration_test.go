package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// ownPolicyNamespace makes a namespace that the suite's raw_exec policy leaves
// out, so its environments answer to the built-in default or to the
// policies a spec makes for it.
func ownPolicyNamespace(ctx context.Context) string {
	GinkgoHelper()
	return fixtures.NewNamespace(ctx, Default, k8sClient, "policy-", map[string]string{controlplane.OwnPolicyLabel: "true"})
}

// policyFor creates an EnvironmentPolicy selecting one namespace by name.
func policyFor(ctx context.Context, ns string, spec v1alpha1.EnvironmentPolicySpec) *v1alpha1.EnvironmentPolicy {
	GinkgoHelper()
	spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	p := &v1alpha1.EnvironmentPolicy{ObjectMeta: metav1.ObjectMeta{Name: "for-" + ns}, Spec: spec}
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed()) })
	return p
}

// expectPolicyViolation waits for TemplateValid=False/PolicyViolation whose
// message names each of parts, and a Warning Event saying the same.
func expectPolicyViolation(ctx context.Context, ns, env string, parts ...string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		ee := &v1alpha1.ExecutionEnvironment{}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: env}, ee)).To(Succeed())
		c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.TemplateValidCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(v1alpha1.ReasonPolicyViolation))
		ready := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.ReadyCondition)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Reason).To(Equal(v1alpha1.ReasonPolicyViolation))
		for _, p := range parts {
			g.Expect(c.Message).To(ContainSubstring(p))
		}
		events := &eventsv1.EventList{}
		g.Expect(k8sClient.List(ctx, events, client.InNamespace(ns))).To(Succeed())
		var notes []string
		for _, ev := range events.Items {
			if ev.Reason == v1alpha1.ReasonPolicyViolation && ev.Type == corev1.EventTypeWarning && ev.Regarding.Name == env {
				notes = append(notes, ev.Note)
			}
		}
		g.Expect(notes).NotTo(BeEmpty())
		for _, p := range parts {
			g.Expect(notes).To(ContainElement(ContainSubstring(p)))
		}
	}).Should(Succeed())
}

// The two escapes of the built-in policy's first spec: a privileged
// container, and a raw_exec sidecar running as root on the node.
var (
	privilegedDockerTemplate = nomaddev.DockerTemplateHCL("", "", "privileged = true")
	rootSidecarTemplate      = nomaddev.SidecarTemplateHCL("", "", "", `task "miner" {
      driver = "raw_exec"
      user   = "root"
      config {
        command = "/bin/sleep"
        args    = ["infinity"]
      }
      resources {
        cpu    = 10
        memory = 10
      }
    }`)
)

var _ = Describe("Environment policies", func() {
	It("refuse a privileged docker template and a raw_exec root sidecar under the built-in default, registering nothing in any Nomad namespace", func(ctx SpecContext) {
		ns := ownPolicyNamespace(ctx)
		// Unique environment names: the job IDs start with them, so a prefix
		// search over every Nomad namespace finds any job made for them.
		priv, side := "priv"+ns[len("policy-"):], "side"+ns[len("policy-"):]
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, priv, 2, func(s *v1alpha1.ExecutionEnvironmentSpec) {
			s.TemplateJob, s.CPULimit, s.MemoryLimit = privilegedDockerTemplate, 100, 64
		})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, side, 2, func(s *v1alpha1.ExecutionEnvironmentSpec) {
			s.TemplateJob, s.CPULimit, s.MemoryLimit = rootSidecarTemplate, 100, 64
		})
		expectPolicyViolation(ctx, ns, priv, `policy "built-in default" refuses the runner job`,
			`group "runner" task "runner" config.privileged: a privileged task is not allowed (policy allow: Privileged)`)
		expectPolicyViolation(ctx, ns, side,
			`group "runner" task "miner" driver: driver "raw_exec" is not allowed (policy drivers)`)
		Consistently(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, priv)).To(BeEmpty())
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, side)).To(BeEmpty())
		}).WithTimeout(2 * time.Second).Should(Succeed())
		// Every Nomad namespace ("*"), whatever meta a job carries.
		all, _, err := nomadAPI.Jobs().List(&nomad.QueryOptions{Namespace: "*"})
		Expect(err).NotTo(HaveOccurred())
		for _, j := range all {
			Expect(j.ID).NotTo(HavePrefix(priv))
			Expect(j.ID).NotTo(HavePrefix(side))
		}
	})

	It("fill the pool of an allowed template, and a policy change stops its refill, removes idle runners, leaves claims and says why", func(ctx SpecContext) {
		ns := ownPolicyNamespace(ctx)
		pol := policyFor(ctx, ns, v1alpha1.EnvironmentPolicySpec{
			Drivers: []string{"raw_exec"}, UnisolatedDrivers: []string{"raw_exec"},
		})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)
		Expect(fixtures.Claim(ctx, k8sClient, &idle[0], claim.Options{Holder: "alice"})).To(Succeed())
		claimed := idle[0].Name
		expectIdlePool(ctx, ns, "python", 2, 1)

		// The admin takes raw_exec away.
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.Drivers = []string{"docker"}
		Expect(k8sClient.Update(ctx, pol)).To(Succeed())
		expectPolicyViolation(ctx, ns, "python", fmt.Sprintf("policy %q refuses the runner job", pol.Name),
			`group "runner" task "runner" driver: driver "raw_exec" is not allowed (policy drivers)`)

		Eventually(func(g Gomega) {
			runners := fixtures.Runners(ctx, g, k8sClient, ns, "python")
			g.Expect(runners).To(HaveLen(1))
			g.Expect(runners[0].Name).To(Equal(claimed))
			g.Expect(runners[0].Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
			jobs := fixtures.NomadJobs(ctx, g, bridge, ns, "python")
			g.Expect(jobs).To(HaveLen(1))
			g.Expect(jobs).To(HaveKey(runners[0].Status.NomadJobID))
		}).WithTimeout(90 * time.Second).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(HaveLen(1))
		}).WithTimeout(3 * time.Second).Should(Succeed())

		// Loosened again, the pool refills.
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.Drivers = []string{"raw_exec"}
		Expect(k8sClient.Update(ctx, pol)).To(Succeed())
		expectIdlePool(ctx, ns, "python", 2, 1)
	})

	It("keep a template's group network mode none for a non-container driver, and refuse a host network without networkAccess", func(ctx SpecContext) {
		ns := ownPolicyNamespace(ctx)
		// raw_exec allowed, but not without isolation: the group's mode none is what isolates it.
		policyFor(ctx, ns, v1alpha1.EnvironmentPolicySpec{Drivers: []string{"raw_exec", "docker"}})
		isolated := strings.Replace(nomaddev.SleepTemplateHCL, `group "runner" {`, `group "runner" {
    network {
      mode = "none"
    }`, 1)
		Expect(isolated).NotTo(Equal(nomaddev.SleepTemplateHCL))
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "isolated", 1, func(s *v1alpha1.ExecutionEnvironmentSpec) { s.TemplateJob = isolated })
		// Nomad 1.11.3 fails the allocations of a group network mode none, so
		// this pool crash-loops: end it with the spec, not with the suite.
		DeferCleanup(func(ctx context.Context) {
			Expect(fixtures.DeleteEnvironment(ctx, k8sClient, ns, "isolated")).To(Succeed())
			Eventually(func(g Gomega) {
				g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "isolated")).To(BeEmpty())
			}).WithTimeout(90 * time.Second).Should(Succeed())
		})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "open", 1) // the same without the network block

		var jobID string
		Eventually(func(g Gomega) {
			runners := fixtures.Runners(ctx, g, k8sClient, ns, "isolated")
			g.Expect(runners).NotTo(BeEmpty())
			jobID = runners[0].Annotations[v1alpha1.JobIDAnnotation]
			job, _, err := nomadAPI.Jobs().Info(jobID, nil)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(job.TaskGroups[0].Networks).To(HaveLen(1))
			g.Expect(job.TaskGroups[0].Networks[0].Mode).To(Equal("none"))
		}).Should(Succeed())
		expectPolicyViolation(ctx, ns, "open", `group "runner" task "runner" driver: the operator cannot take the network away from a "raw_exec" task`)

		host := nomaddev.DockerTemplateHCL("", "", `network_mode = "host"`)
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "host", 1, func(s *v1alpha1.ExecutionEnvironmentSpec) { s.TemplateJob = host })
		expectPolicyViolation(ctx, ns, "host", `group "runner" task "runner" config.network_mode: "host" gives a network to an environment without networkAccess (policy spec.networkAccess)`)
		Expect(fixtures.Runners(ctx, Default, k8sClient, ns, "host")).To(BeEmpty())
	})

	It("can be written by cluster admins only: an environment editor can neither create nor loosen one", func(ctx SpecContext) {
		ns := ownPolicyNamespace(ctx)
		pol := policyFor(ctx, ns, v1alpha1.EnvironmentPolicySpec{})
		editor, _ := userBoundTo(ctx, ns, shippedRole(ctx, "environment_editor_role.yaml", ns), "author")

		err := editor.Create(ctx, &v1alpha1.EnvironmentPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "mine-" + ns},
			Spec:       v1alpha1.EnvironmentPolicySpec{Allow: []v1alpha1.PolicyPermission{v1alpha1.PermitPrivileged}},
		})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		loosened := pol.DeepCopy()
		loosened.Spec.Allow = []v1alpha1.PolicyPermission{v1alpha1.PermitPrivileged}
		Expect(apierrors.IsForbidden(editor.Update(ctx, loosened))).To(BeTrue())
		Expect(apierrors.IsForbidden(editor.Delete(ctx, pol))).To(BeTrue())
		// Nor can it move its namespace under other policies by relabelling it.
		relabel := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		err = editor.Patch(ctx, relabel, client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"`+controlplane.OwnPolicyLabel+`":null}}}`)))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)

		// Within its namespace, the editor still does its job.
		Expect(editor.Create(ctx, &v1alpha1.ExecutionEnvironment{
			ObjectMeta: metav1.ObjectMeta{Name: "course", Namespace: ns},
			Spec:       v1alpha1.ExecutionEnvironmentSpec{Image: "python:3.13"},
		})).To(Succeed())
	})
})
