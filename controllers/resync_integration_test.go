package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

// runnerReconciles is the Runner controller's reconcile count so far.
func runnerReconciles(g Gomega) float64 {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "runner" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

var _ = Describe("A resync after the Nomad event stream reconnects", func() {
	It("reconciles every runner again with no Nomad read per runner, from one jobs list and one allocations list", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		idle := expectIdlePool(ctx, ns, "python", 3, 0)

		all := &v1alpha1.RunnerList{}
		Expect(k8sClient.List(ctx, all)).To(Succeed())
		before := runnerReconciles(Default)
		opened := operatorNomad.Count("GET /v1/event/stream")
		lists := operatorNomad.Count("GET /v1/allocations")
		perRunner := func() map[string]int {
			out := map[string]int{}
			for _, r := range idle {
				for k, v := range operatorNomad.ForID(r.Status.NomadJobID) {
					out[k] += v
				}
				for k, v := range operatorNomad.ForID(r.Status.AllocationID) {
					out[k] += v
				}
			}
			return out
		}
		readsBefore := perRunner()

		Expect(operatorNomad.CutStreams()).To(BeNumerically(">=", 1))
		// Reconnected, and every runner of the cluster went through a reconcile again.
		Eventually(func(g Gomega) {
			g.Expect(operatorNomad.Count("GET /v1/event/stream")).To(BeNumerically(">", opened))
			g.Expect(runnerReconciles(g) - before).To(BeNumerically(">=", len(all.Items)))
		}).WithPolling(100 * time.Millisecond).Should(Succeed())
		Consistently(perRunner).WithTimeout(2*time.Second).Should(Equal(readsBefore),
			"a resync must not read Nomad per runner")
		// What it read instead: one allocations list (and one jobs list, whose
		// path the orphan collector shares).
		Expect(operatorNomad.Count("GET /v1/allocations")).To(Equal(lists + 1))

		// The runners are still what they were.
		for _, r := range idle {
			got := &v1alpha1.Runner{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&r), got)).To(Succeed())
			Expect(got.Status.Phase).To(Equal(v1alpha1.RunnerIdle))
			Expect(got.Status.AllocationID).To(Equal(r.Status.AllocationID))
		}
	})
})
