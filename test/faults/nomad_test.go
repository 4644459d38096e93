package faults_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

// crashTemplate is a runner whose task exits at once: every runner fails.
const crashTemplate = `
job "template" {
  group "runner" {
    task "runner" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "exit 3"]
      }
    }
  }
}`

func nomadReachable(ee *v1alpha1.ExecutionEnvironment) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.NomadReachableCondition); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}

var _ = Describe("Nomad lost", func() {
	It("reports NomadReachable False while the agent is down, then replaces idle runners and fails the claimed one with NomadJobLost", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		startOperator("op", operatorOptions{})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "lost", 3)
		idle := converged(ctx, ns, "lost", 3, nil)
		Expect(fixtures.Claim(ctx, k8sClient, &idle[0], claim.Options{Holder: "carol"})).To(Succeed())
		held := mustGet(ctx, idle[0])
		converged(ctx, ns, "lost", 3, []v1alpha1.Runner{held})
		before := map[types.UID]bool{}
		for _, r := range fixtures.Runners(ctx, Default, k8sClient, ns, "") {
			before[r.UID] = true
		}

		failuresBefore := regs.failed()
		downAt := time.Now()
		agent.Kill() // dev mode: its state is gone with it
		Eventually(func(g Gomega) {
			g.Expect(nomadReachable(getEnv(ctx, g, ns, "lost"))).To(Equal(metav1.ConditionFalse))
		}).WithPolling(200 * time.Millisecond).Should(Succeed())
		// Stay down a while: retries must back off, not spin.
		time.Sleep(5 * time.Second)
		downFor := time.Since(downAt)
		failedWhileDown := regs.failed() - failuresBefore
		GinkgoWriter.Printf("Nomad down for %s: %d failed Nomad calls of the operator\n", downFor.Round(time.Millisecond), failedWhileDown)
		// 3 runners + probe every 0.5s + the event stream: a spin would be thousands.
		Expect(failedWhileDown).To(BeNumerically("<", 200))
		Expect(agent.Relaunch(ctx)).To(Succeed())

		// The claimed runner's holder learns what happened; it is not offered again.
		Eventually(func(g Gomega) {
			now := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, keyOf(&held), now)).To(Succeed())
			g.Expect(now.UID).To(Equal(held.UID))
			g.Expect(now.Status.Phase).To(Equal(v1alpha1.RunnerFailed))
			g.Expect(now.Status.Reason).To(Equal(v1alpha1.ReasonNomadJobLost))
			g.Expect(now.Status.Claim).To(Equal(held.Status.Claim))
		}).WithTimeout(60 * time.Second).Should(Succeed())

		// Three new idle runners, each with a job in the new Nomad; the failed
		// claimed one stays (its holder deletes it) and has no job.
		Eventually(func(g Gomega) {
			ee := getEnv(ctx, g, ns, "lost")
			g.Expect(nomadReachable(ee)).To(Equal(metav1.ConditionTrue))
			all := fixtures.Runners(ctx, g, k8sClient, ns, "")
			idle := fixtures.ByPhase(all, v1alpha1.RunnerIdle)
			g.Expect(idle).To(HaveLen(3))
			g.Expect(all).To(HaveLen(4))
			jobs := fixtures.NomadJobs(ctx, g, bridge, ns, "")
			g.Expect(jobs).To(HaveLen(3))
			for _, r := range idle {
				g.Expect(before).NotTo(HaveKey(r.UID))
				g.Expect(jobs).To(HaveKey(r.Status.NomadJobID))
			}
			g.Expect(meta.IsStatusConditionTrue(ee.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue())
		}).WithTimeout(90 * time.Second).WithPolling(300 * time.Millisecond).Should(Succeed())
		Expect(eventReasons(ctx, ns, held.Name)).To(ContainElement(v1alpha1.ReasonNomadJobLost))
		Expect(k8sClient.Delete(ctx, &held)).To(Succeed())
	})
})

var _ = Describe("Event stream dropped", func() {
	It("reconnects from its last index and resyncs: a job stopped meanwhile is noticed", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		op := startOperator("op", operatorOptions{})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "stream", 3)
		idle := converged(ctx, ns, "stream", 3, nil)
		Expect(fixtures.Claim(ctx, k8sClient, &idle[0], claim.Options{Holder: "dave"})).To(Succeed())
		held := mustGet(ctx, idle[0])
		idle = converged(ctx, ns, "stream", 3, []v1alpha1.Runner{held})

		// Cut the connection and keep it down while Nomad changes.
		op.bridge.set(func(b *faultBridge) { b.eventsBlocked = true })
		connects := len(op.bridge.indexes())
		op.bridge.dropStream()
		Eventually(func() int { return len(op.bridge.indexes()) }).WithTimeout(10 * time.Second).Should(BeNumerically(">", connects))
		_, _, err := nomadAPI.Jobs().Deregister(idle[0].Status.NomadJobID, false, nil) // stop, no purge
		Expect(err).NotTo(HaveOccurred())
		_, _, err = nomadAPI.Jobs().Deregister(held.Status.NomadJobID, false, nil)
		Expect(err).NotTo(HaveOccurred())
		Consistently(func(g Gomega) {
			now := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, keyOf(&held), now)).To(Succeed())
			g.Expect(now.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		}).WithTimeout(2*time.Second).Should(Succeed(), "without the stream, nothing is noticed (no polling)")
		op.bridge.set(func(b *faultBridge) { b.eventsBlocked = false })

		Eventually(func(g Gomega) {
			now := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, keyOf(&held), now)).To(Succeed())
			g.Expect(now.Status.Phase).To(Equal(v1alpha1.RunnerFailed))
			// A stopped (not purged) job keeps its complete allocation: either reason tells the holder.
			g.Expect(now.Status.Reason).To(BeElementOf(v1alpha1.ReasonNomadJobLost, v1alpha1.ReasonAllocationFailed))
			g.Expect(now.Status.Claim).To(Equal(held.Status.Claim))
			gone := &v1alpha1.Runner{}
			err := k8sClient.Get(ctx, keyOf(&idle[0]), gone)
			g.Expect(client.IgnoreNotFound(err)).To(Succeed())
			g.Expect(err).To(HaveOccurred(), "the idle runner whose job stopped is replaced")
		}).WithTimeout(60 * time.Second).Should(Succeed())
		idx := op.bridge.indexes()
		GinkgoWriter.Printf("Event stream (re)connect indexes: %v\n", idx)
		Expect(idx[len(idx)-1]).To(BeNumerically(">", 0), "resumed from the last index, not from the start")
		Expect(k8sClient.Delete(ctx, &held)).To(Succeed())
		converged(ctx, ns, "stream", 3, nil)
	})
})

var _ = Describe("A crash-looping template", func() {
	It("rate-limits replacements, says so in a condition and an Event, and registers a bounded number of jobs", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		startOperator("op", operatorOptions{})
		start := time.Now()
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "crash", 2, func(s *v1alpha1.ExecutionEnvironmentSpec) { s.TemplateJob = crashTemplate })
		Eventually(func(g Gomega) {
			ee := getEnv(ctx, g, ns, "crash")
			c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.PoolFilledCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonRunnersCrashLooping))
			ready := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.ReadyCondition)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(v1alpha1.ReasonRunnersCrashLooping))
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Expect(eventReasons(ctx, ns, "crash")).To(ContainElement(v1alpha1.ReasonRunnersCrashLooping))

		// Let it loop for 30 s in all. Unlimited, a pool of 2 whose tasks die
		// within ~1-2 s registers a job every second or so; with the backoff
		// (2 free, then 1, 2, 4, 8, 16 s) at most 2+2+5 = 9 plus slack.
		time.Sleep(time.Until(start.Add(30 * time.Second)))
		total, _ := regs.registrations("crash-")
		msg := meta.FindStatusCondition(getEnv(ctx, Default, ns, "crash").Status.Conditions, v1alpha1.PoolFilledCondition).Message
		GinkgoWriter.Printf("Crash-looping pool of 2: %d jobs registered in %s; PoolFilled: %s\n", total, time.Since(start).Round(time.Second), msg)
		Expect(total).To(BeNumerically("<=", 12))
		Expect(total).To(BeNumerically(">=", 3))
	})
})

var _ = Describe("Deletion with Nomad unreachable", func() {
	It("waits with a condition and an Event, and the skip-cleanup annotation finishes it; the job is collected later", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		op := startOperator("op", operatorOptions{})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "del", 1)
		idle := converged(ctx, ns, "del", 1, nil)
		victim := idle[0]

		op.bridge.set(func(b *faultBridge) {
			b.beforePurge = func(string) error { return fmt.Errorf("purge: %w", errInjected) }
		})
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "del", 0)).To(Succeed())
		Eventually(func(g Gomega) {
			now := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, keyOf(&victim), now)).To(Succeed())
			g.Expect(now.DeletionTimestamp).NotTo(BeNil())
			c := meta.FindStatusCondition(now.Status.Conditions, v1alpha1.NomadJobPurgedCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonPurgeFailed))
			g.Expect(c.Message).To(ContainSubstring(v1alpha1.SkipNomadCleanupAnnotation))
		}).Should(Succeed())
		Expect(eventReasons(ctx, ns, victim.Name)).To(ContainElement(v1alpha1.EventReasonFailedPurge))
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, keyOf(&victim), &v1alpha1.Runner{})).To(Succeed())
		}).WithTimeout(3*time.Second).Should(Succeed(), "the finalizer holds while the purge fails")

		// The administrator's escape.
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, v1alpha1.SkipNomadCleanupAnnotation)
		Expect(k8sClient.Patch(ctx, &victim, client.RawPatch(types.MergePatchType, []byte(patch)))).To(Succeed())
		Eventually(func() error {
			return k8sClient.Get(ctx, keyOf(&victim), &v1alpha1.Runner{})
		}).Should(MatchError(ContainSubstring("not found")))
		Expect(fixtures.NomadJobs(ctx, Default, bridge, ns, "")).To(HaveKey(victim.Status.NomadJobID), "skipped: the job was left in Nomad")

		// Nomad answers again: the orphan collector purges what was left.
		op.bridge.set(func(b *faultBridge) { b.beforePurge = nil })
		Eventually(func(g Gomega) {
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "")).To(BeEmpty())
		}).Should(Succeed())
	})
})
