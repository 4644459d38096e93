package faults_test

import (
	"context"
	"sync/atomic"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

var _ = Describe("Operator killed mid-flight", func() {
	// A kill is the manager's context cancelled inside a Nomad call, at the exact
	// point named; a new manager then starts on the same API server and Nomad.
	It("converges after a kill between 'Runner created' and 'job registered'", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		var first *operator
		var kills atomic.Int32
		first = startOperator("first", operatorOptions{}, func(b *faultBridge) {
			b.beforeRegister = func(*nomad.Job) error {
				kills.Add(1)
				first.kill()
				return context.Canceled
			}
		})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "py", 3)
		first.waitDead()
		Expect(kills.Load()).To(BeNumerically(">=", 1))
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "")).NotTo(BeEmpty(), "runners were created before the kill")
		}).Should(Succeed())
		Expect(fixtures.NomadJobs(ctx, Default, bridge, ns, "")).To(BeEmpty(), "no job was registered before the kill")

		startOperator("second", operatorOptions{})
		converged(ctx, ns, "py", 3, nil)
	})

	It("converges after a kill between 'job registered' and 'status written'", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		var first *operator
		first = startOperator("first", operatorOptions{}, func(b *faultBridge) {
			b.afterRegister = func(*nomad.Job, error) { first.kill() }
		})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "py", 3)
		first.waitDead()
		Eventually(func(g Gomega) {
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "")).NotTo(BeEmpty())
		}).Should(Succeed())
		unwritten := 0
		for _, r := range fixtures.Runners(ctx, Default, k8sClient, ns, "") {
			if r.Status.NomadJobID == "" { // reads Pending (the default) but was never written
				unwritten++
			}
		}
		Expect(unwritten).To(BeNumerically(">=", 1), "a runner whose job is registered has no status yet")

		startOperator("second", operatorOptions{})
		converged(ctx, ns, "py", 3, nil)
	})

	It("converges after a kill during a scale-down, leaving the claimed runner alone", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		first := startOperator("first", operatorOptions{})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "py", 4)
		idle := converged(ctx, ns, "py", 4, nil)
		Expect(fixtures.Claim(ctx, k8sClient, &idle[0], claim.Options{Holder: "alice"})).To(Succeed())
		claimed := []v1alpha1.Runner{mustGet(ctx, idle[0])}
		converged(ctx, ns, "py", 4, claimed)

		var purges atomic.Int32
		first.bridge.set(func(b *faultBridge) {
			b.beforePurge = func(string) error {
				if purges.Add(1) == 2 { // one job purged, the next purge never happens
					first.kill()
					return context.Canceled
				}
				return nil
			}
		})
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "py", 1)).To(Succeed())
		first.waitDead()
		Expect(purges.Load()).To(BeNumerically(">=", 2))

		startOperator("second", operatorOptions{})
		converged(ctx, ns, "py", 1, claimed)
	})

	It("converges after a kill during a rollout, leaving the claimed runner alone", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		first := startOperator("first", operatorOptions{})
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "py", 3)
		idle := converged(ctx, ns, "py", 3, nil)
		Expect(fixtures.Claim(ctx, k8sClient, &idle[0], claim.Options{Holder: "bob"})).To(Succeed())
		claimed := []v1alpha1.Runner{mustGet(ctx, idle[0])}
		converged(ctx, ns, "py", 3, claimed)
		oldHash := getEnv(ctx, Default, ns, "py").Status.TemplateHash

		var regsAfter atomic.Int32
		first.bridge.set(func(b *faultBridge) {
			b.afterRegister = func(*nomad.Job, error) {
				if regsAfter.Add(1) == 2 { // the rollout's second new job
					first.kill()
				}
			}
		})
		Expect(fixtures.PatchEnvironment(ctx, k8sClient, ns, "py", `{"spec":{"image":"python:3.14"}}`)).To(Succeed())
		first.waitDead()

		startOperator("second", operatorOptions{})
		idle = converged(ctx, ns, "py", 3, claimed)
		for _, r := range idle {
			Expect(r.Spec.TemplateHash).NotTo(Equal(oldHash))
		}
	})
})

var _ = Describe("Two operator replicas with leader election", func() {
	It("hands over when the leader is killed during a scale-up, with no double registration", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		a := startOperator("replica-a", operatorOptions{leaderElection: true})
		b := startOperator("replica-b", operatorOptions{leaderElection: true})
		var leader, follower *operator
		Eventually(func() bool {
			select {
			case <-a.mgr.Elected():
				leader, follower = a, b
				return true
			case <-b.mgr.Elected():
				leader, follower = b, a
				return true
			default:
				return false
			}
		}).Should(BeTrue())
		GinkgoWriter.Printf("Leader is %s\n", leader.name)

		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "ha", 2)
		converged(ctx, ns, "ha", 2, nil)

		var n atomic.Int32
		leader.bridge.set(func(fb *faultBridge) {
			fb.afterRegister = func(*nomad.Job, error) {
				if n.Add(1) == 3 {
					leader.kill()
				}
			}
		})
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "ha", 10)).To(Succeed())
		leader.waitDead()
		Eventually(follower.mgr.Elected()).Should(BeClosed())
		converged(ctx, ns, "ha", 10, nil)
		total, _ := regs.registrations("ha-")
		GinkgoWriter.Printf("Registrations in %s: %d (leader killed after its 3rd of the scale-up)\n", ns, total)
	})
})

func mustGet(ctx context.Context, r v1alpha1.Runner) v1alpha1.Runner {
	GinkgoHelper()
	out := v1alpha1.Runner{}
	Expect(k8sClient.Get(ctx, keyOf(&r), &out)).To(Succeed())
	return out
}
