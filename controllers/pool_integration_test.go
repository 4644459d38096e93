package controllers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// expectIdlePool waits until the environment holds exactly n Idle runners with
// a running allocation each besides `others` runners in other phases, Nomad
// holds exactly their jobs, and status says so.
func expectIdlePool(ctx context.Context, ns, env string, n, others int) []v1alpha1.Runner {
	GinkgoHelper()
	var idle []v1alpha1.Runner
	Eventually(func(g Gomega) {
		all := fixtures.Runners(ctx, g, k8sClient, ns, env)
		idle = fixtures.ByPhase(all, v1alpha1.RunnerIdle)
		g.Expect(idle).To(HaveLen(n))
		g.Expect(all).To(HaveLen(n + others))
		jobs := fixtures.NomadJobs(ctx, g, bridge, ns, env)
		g.Expect(jobs).To(HaveLen(n + others))
		for _, r := range idle {
			g.Expect(jobs).To(HaveKey(r.Status.NomadJobID))
			allocs, err := bridge.JobAllocations(ctx, "default", r.Status.NomadJobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
			g.Expect(allocs[0].ID).To(Equal(r.Status.AllocationID))
		}
		ee := &v1alpha1.ExecutionEnvironment{}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: env}, ee)).To(Succeed())
		g.Expect(ee.Status.IdleRunners).To(BeEquivalentTo(n))
		g.Expect(meta.IsStatusConditionTrue(ee.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue())
		g.Expect(ee.Status.ObservedGeneration).To(Equal(ee.Generation))
	}).WithTimeout(90 * time.Second).Should(Succeed())
	return idle
}

func kubectl(ctx context.Context, ns string, args ...string) string {
	GinkgoHelper()
	bin := os.Getenv("KUBECTL")
	if bin == "" {
		Skip("KUBECTL is not set (make test sets it)")
	}
	out, err := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), out)
	return string(out)
}

var _ = Describe("The prewarmed pool", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("fills a pool of 3 with running runners, shows it in kubectl and turns Ready", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)

		kubectl(ctx, ns, "wait", "--for=condition=Ready", "ee/python", "--timeout=60s")
		lines := strings.Split(strings.TrimSpace(kubectl(ctx, ns, "get", "ee")), "\n")
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "IMAGE", "POOL", "IDLE", "CLAIMED", "READY", "AGE"}))
		Expect(strings.Fields(lines[1])[:6]).To(Equal([]string{"python", "python:3.13", "3", "3", "0", "True"}))
		// The phase is a selectable field: kubectl selects on it server-side.
		idle := strings.Fields(kubectl(ctx, ns, "get", "rn", "-l", v1alpha1.EnvironmentLabel+"=python",
			"--field-selector", v1alpha1.PhaseField+"=Idle", "-o", "name"))
		Expect(idle).To(HaveLen(3))
		Expect(strings.Fields(kubectl(ctx, ns, "get", "rn", "--field-selector", v1alpha1.PhaseField+"=Claimed", "-o", "name"))).To(BeEmpty())
	}, SpecTimeout(150*time.Second))

	It("scales 3 → 6 → 2 with Nomad holding exactly the runners the objects say, never more than the target", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)

		var mu sync.Mutex
		bound, peak := 6, 0
		over := []string{}
		sampleCtx, stopSampling := context.WithCancel(ctx)
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for sampleCtx.Err() == nil {
				if refs, err := bridge.ListRunnerJobs(sampleCtx); err == nil {
					n := 0
					for _, r := range refs {
						if r.Meta.Namespace == ns {
							n++
						}
					}
					mu.Lock()
					peak = max(peak, n)
					if n > bound {
						over = append(over, fmt.Sprintf("%d jobs with bound %d", n, bound))
					}
					mu.Unlock()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()

		Expect(fixtures.SetPool(ctx, k8sClient, ns, "python", 6)).To(Succeed())
		expectIdlePool(ctx, ns, "python", 6, 0)
		// Scaling down, the old size bounds the count until the surplus is purged.
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "python", 2)).To(Succeed())
		expectIdlePool(ctx, ns, "python", 2, 0)
		mu.Lock()
		bound = 2
		mu.Unlock()
		Consistently(func(g Gomega) {
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).To(HaveLen(2))
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(HaveLen(2))
		}).WithTimeout(3 * time.Second).Should(Succeed())
		stopSampling()
		<-sampled
		Expect(over).To(BeEmpty(), "Nomad held more runner jobs than the target")
		Expect(peak).To(Equal(6))
	}, SpecTimeout(240*time.Second))

	It("rolls idle runners on an image change and leaves the claimed one and its job alone", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		idle := expectIdlePool(ctx, ns, "python", 3, 0)
		held := idle[0]
		Expect(fixtures.Claim(ctx, k8sClient, &held, claim.Options{Holder: "alice"})).To(Succeed())
		expectIdlePool(ctx, ns, "python", 3, 1)

		ee := &v1alpha1.ExecutionEnvironment{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "python"}, ee)).To(Succeed())
		oldHash := ee.Status.TemplateHash
		Expect(k8sClient.Patch(ctx, ee, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"image":"python:3.14"}}`)))).To(Succeed())

		Eventually(func(g Gomega) {
			fresh := &v1alpha1.ExecutionEnvironment{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), fresh)).To(Succeed())
			g.Expect(fresh.Status.TemplateHash).NotTo(Equal(oldHash))
			for _, r := range fixtures.ByPhase(fixtures.Runners(ctx, g, k8sClient, ns, "python"), v1alpha1.RunnerIdle) {
				g.Expect(r.Spec.TemplateHash).To(Equal(fresh.Status.TemplateHash), "runner %s is stale", r.Name)
			}
		}).WithTimeout(120 * time.Second).Should(Succeed())
		expectIdlePool(ctx, ns, "python", 3, 1)

		after := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&held), after)).To(Succeed())
		Expect(after.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Expect(after.Status.Claim.Holder).To(Equal("alice"))
		Expect(after.Spec.TemplateHash).To(Equal(oldHash))
		allocs, err := bridge.JobAllocations(ctx, "default", held.Status.NomadJobID)
		Expect(err).NotTo(HaveOccurred())
		Expect(allocs).To(HaveLen(1))
		Expect(allocs[0].ID).To(Equal(held.Status.AllocationID))
		Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
	}, SpecTimeout(240*time.Second))

	It("replaces an idle runner whose job is stopped in Nomad, and fails a claimed one with the reason", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)
		held, victim := idle[0], idle[1]
		Expect(fixtures.Claim(ctx, k8sClient, &held, claim.Options{Holder: "bob"})).To(Succeed())
		expectIdlePool(ctx, ns, "python", 2, 1)

		_, _, err := nomadAPI.Jobs().Deregister(victim.Status.NomadJobID, false, nil)
		Expect(err).NotTo(HaveOccurred())
		_, _, err = nomadAPI.Jobs().Deregister(held.Status.NomadJobID, false, nil)
		Expect(err).NotTo(HaveOccurred())

		Eventually(func(g Gomega) {
			r := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&held), r)).To(Succeed())
			g.Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerFailed))
			g.Expect(r.Status.Reason).To(BeElementOf(v1alpha1.ReasonNomadJobLost, v1alpha1.ReasonAllocationFailed))
			g.Expect(r.Status.Message).NotTo(BeEmpty())
			g.Expect(r.Status.Claim.Holder).To(Equal("bob"), "the holder keeps its claim and learns why")
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&victim), &v1alpha1.Runner{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the idle runner whose job was stopped must be replaced")
		}).WithTimeout(60 * time.Second).Should(Succeed())
		expectIdlePool(ctx, ns, "python", 2, 1)
	}, SpecTimeout(240*time.Second))

	It("removes every runner and Nomad job it made when the environment is deleted, and no foreign job", func(ctx SpecContext) {
		foreign := "foreign-" + ns
		_, _, err := nomadAPI.Jobs().Register(nomaddev.SleepJob(foreign, map[string]string{"team": "data"}), nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _, _ = nomadAPI.Jobs().Deregister(foreign, true, nil) })

		ee := fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)

		Expect(k8sClient.Delete(ctx, ee)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(BeEmpty())
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).To(BeEmpty())
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), &v1alpha1.ExecutionEnvironment{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}).WithTimeout(60 * time.Second).Should(Succeed())
		stored, _, err := nomadAPI.Jobs().Info(foreign, nil)
		Expect(err).NotTo(HaveOccurred(), "the foreign job must survive")
		Expect(*stored.Status).NotTo(Equal("dead"))
	}, SpecTimeout(180*time.Second))

	It("reports an invalid HCL template with Nomad's message and registers nothing", func(ctx SpecContext) {
		ee := &v1alpha1.ExecutionEnvironment{
			ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: ns},
			Spec: v1alpha1.ExecutionEnvironmentSpec{
				Image: "python:3.13", PrewarmingPoolSize: 2, TemplateJob: `job "t" { group "g" { task "t" { driver = } } }`,
			},
		}
		Expect(k8sClient.Create(ctx, ee)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), ee)).To(Succeed())
			c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.TemplateValidCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonTemplateInvalid))
			g.Expect(c.Message).To(ContainSubstring("Nomad rejected the runner job"))
			g.Expect(c.Message).To(ContainSubstring("Failed to parse job"))
			g.Expect(meta.IsStatusConditionFalse(ee.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue())
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "broken")).To(BeEmpty())
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "broken")).To(BeEmpty())
		}).WithTimeout(3 * time.Second).Should(Succeed())
	}, SpecTimeout(60*time.Second))
})

var _ = Describe("A pool with network access", func() {
	It("reports the host ports Nomad mapped for the exposed ports", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "web", 1, func(s *v1alpha1.ExecutionEnvironmentSpec) {
			s.NetworkAccess, s.ExposedPorts = true, []int32{8080}
		})
		idle := expectIdlePool(ctx, ns, "web", 1, 0)
		Expect(idle[0].Status.Ports).To(HaveLen(1))
		p := idle[0].Status.Ports[0]
		Expect(p.Label).To(Equal("port-8080"))
		Expect(p.To).To(BeEquivalentTo(8080))
		Expect(p.Port).To(BeNumerically(">", 0))
		Expect(idle[0].Status.Address).To(Equal("127.0.0.1"))
	}, SpecTimeout(90*time.Second))
})

var _ = Describe("A pool Nomad cannot place", func() {
	It("holds its runners as Pending with Nomad's reason instead of churning them", func(ctx SpecContext) {
		ns := ownPolicyNamespace(ctx)
		policyFor(ctx, ns, v1alpha1.EnvironmentPolicySpec{
			Drivers: []string{"raw_exec"}, UnisolatedDrivers: []string{"raw_exec"},
			Resources: v1alpha1.PolicyResources{MaxMemoryMB: ptr.To[int32](100000)},
		})
		ee := fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "huge", 2, func(s *v1alpha1.ExecutionEnvironmentSpec) {
			s.MemoryLimit = 100000 // more than the dev node has (16 GiB)
		})
		var names []string
		Eventually(func(g Gomega) {
			all := fixtures.Runners(ctx, g, k8sClient, ns, "huge")
			g.Expect(all).To(HaveLen(2))
			names = nil
			for _, r := range all {
				g.Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerPending))
				g.Expect(r.Status.Reason).To(Equal(v1alpha1.ReasonWaitingForNomad))
				g.Expect(r.Status.Message).To(ContainSubstring("memory"))
				names = append(names, r.Name)
			}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), ee)).To(Succeed())
			c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.PoolFilledCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonWaitingForNomad))
			g.Expect(ee.Status.PendingRunners).To(BeEquivalentTo(2))
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Consistently(func(g Gomega) {
			var now []string
			for _, r := range fixtures.Runners(ctx, g, k8sClient, ns, "huge") {
				now = append(now, r.Name)
			}
			g.Expect(now).To(ConsistOf(names), "runners waiting for capacity must not be replaced")
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "huge")).To(HaveLen(2))
		}).WithTimeout(5 * time.Second).Should(Succeed())
		Expect(k8sClient.Delete(ctx, ee)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "huge")).To(BeEmpty())
		}).Should(Succeed())
	}, SpecTimeout(120*time.Second))
})

var _ = Describe("Claims and orphans", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("destroys a claimed runner whose holder stops renewing, keeps a renewed one, and refills the pool", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)
		quiet, busy := idle[0], idle[1]
		for _, r := range []*v1alpha1.Runner{&quiet, &busy} {
			Expect(fixtures.Claim(ctx, k8sClient, r, claim.Options{Holder: "dave", Token: "t-" + r.Name, InactivityTimeout: 3 * time.Second})).To(Succeed())
		}
		// Renew the busy one every half second until the spec ends: 8 s, well
		// past the 3 s timeout, before looking, and on while the pool refills.
		renew := func() error {
			patch := fmt.Sprintf(`{"status":{"claim":{"lastActivityTime":%q}}}`, time.Now().UTC().Format(time.RFC3339))
			return k8sClient.Status().Patch(ctx, busy.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
		}
		Expect(renew()).To(Succeed())
		renewCtx, stopRenewing := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			for renewCtx.Err() == nil {
				_ = renew()
				time.Sleep(500 * time.Millisecond)
			}
		}()
		DeferCleanup(func() { stopRenewing(); <-renewed })
		time.Sleep(8 * time.Second)
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&quiet), &v1alpha1.Runner{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the unrenewed runner must be gone, got %v", err)
		r := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&busy), r)).To(Succeed())
		Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Eventually(func(g Gomega) {
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).NotTo(HaveKey(quiet.Status.NomadJobID))
		}).Should(Succeed())
		expectIdlePool(ctx, ns, "python", 2, 1)
	}, SpecTimeout(180*time.Second))

	It("purges a Nomad job that carries this operator's meta but has no Runner", func(ctx SpecContext) {
		orphanID := nomadbridge.NewRunnerJobID("python")
		Expect(bridge.RegisterRunnerJob(ctx, nomaddev.SleepJob(orphanID,
			nomadbridge.RunnerMeta{Instance: instance, Namespace: ns, Environment: "python", Runner: "python-gone1"}.Map()))).To(Succeed())

		otherInstance := nomadbridge.NewRunnerJobID("python")
		_, _, err := nomadAPI.Jobs().Register(nomaddev.SleepJob(otherInstance,
			nomadbridge.RunnerMeta{Instance: "someone-else", Namespace: ns, Environment: "python", Runner: "python-gone2"}.Map()), nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _, _ = nomadAPI.Jobs().Deregister(otherInstance, true, nil) })

		// Two passes: one stops the job, a later one purges it once the client
		// has ended its task (which takes the client long on a loaded machine).
		Eventually(func(g Gomega) {
			job, _, err := nomadAPI.Jobs().Info(orphanID, nil)
			if err != nil {
				g.Expect(err).To(MatchError(ContainSubstring("404")))
				return
			}
			g.Expect(*job.Stop).To(BeTrue(), "the orphan is stopped first")
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Eventually(func() error {
			_, _, err := nomadAPI.Jobs().Info(orphanID, nil)
			return err
		}).WithTimeout(120 * time.Second).Should(MatchError(ContainSubstring("404")))
		_, _, err = nomadAPI.Jobs().Info(otherInstance, nil)
		Expect(err).NotTo(HaveOccurred(), "another operator instance's job must survive")
	}, SpecTimeout(240*time.Second))
})
