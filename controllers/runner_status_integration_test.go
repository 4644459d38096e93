package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

var _ = Describe("Runner status writes while a pool fills", func() {
	It("shows new runners as Pending at once, writes a starting runner's status only at milestones, and records the pool's creations in one SuccessfulCreate", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		wc, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: controlplane.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &v1alpha1.RunnerList{}, client.InNamespace(ns))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(w.Stop)

		const pool = 3
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", pool)

		// Every version of every runner the API server sent, with when it came.
		type seen struct {
			at time.Time
			rn *v1alpha1.Runner
		}
		history := map[string][]seen{}
		idle := map[string]bool{}
		timeout := time.After(90 * time.Second)
		for len(idle) < pool {
			select {
			case ev, ok := <-w.ResultChan():
				Expect(ok).To(BeTrue(), "watch closed")
				rn, isRunner := ev.Object.(*v1alpha1.Runner)
				if !isRunner || ev.Type == watch.Deleted {
					continue
				}
				history[rn.Name] = append(history[rn.Name], seen{time.Now(), rn})
				if rn.Status.Phase == v1alpha1.RunnerIdle {
					idle[rn.Name] = true
				}
			case <-timeout:
				Fail("the pool did not fill within 90 s")
			}
		}

		for name, versions := range history {
			if !idle[name] {
				continue
			}
			first := versions[0].rn
			Expect(first.Status.Phase).To(Equal(v1alpha1.RunnerPending), "runner %s as created reads Pending (the schema default)", name)
			Expect(first.Status.NomadJobID).To(BeEmpty(), "runner %s as created has no status written", name)
			created := first.CreationTimestamp.Time // whole seconds, rounded down: the check below only gets stricter
			writes := 0
			for _, v := range versions[1:] {
				writes++
				if v.rn.Status.Phase == v1alpha1.RunnerIdle {
					Expect(v.rn.Status.NomadJobID).NotTo(BeEmpty())
					Expect(v.rn.Status.AllocationID).NotTo(BeEmpty())
					break
				}
				// A write before Idle: Nomad's reason for waiting, or a runner
				// still starting once the quiet period is over.
				if v.rn.Status.Reason == "" {
					Expect(v.at.Sub(created)).To(BeNumerically(">=", controllers.StartupQuiet),
						"runner %s: status written %v after creation while starting normally: %+v", name, v.at.Sub(created), v.rn.Status)
				}
			}
			GinkgoWriter.Printf("runner %s: %d status write(s) up to Idle\n", name, writes)
		}

		// The first pass created the whole pool: one event says so, not one per runner.
		Eventually(func(g Gomega) {
			list := &eventsv1.EventList{}
			g.Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			var created []string
			for _, ev := range list.Items {
				if ev.Reason == v1alpha1.EventReasonSuccessfulCreate && ev.Regarding.Name == "python" {
					created = append(created, ev.Note)
				}
			}
			g.Expect(created).To(ConsistOf(HavePrefix(fmt.Sprintf("Created %d runners: ", pool))))
			for name := range history {
				g.Expect(created[0]).To(ContainSubstring(name))
			}
		}).Should(Succeed())
	}, SpecTimeout(2*time.Minute))
})
