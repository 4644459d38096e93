package faults_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// installation is one operator installation in its own cluster: a manager
// started as main.go starts it without --operator-instance, on the suite's
// Nomad.
type installation struct {
	name     string
	client   client.Client // the cluster's admin client, for assertions
	instance string
	bridge   *nomadbridge.NomadClient
	nomad    *nomaddev.Counter // the installation's Nomad requests
}

// The namespace config/default installs the operator into: the same in both
// clusters, as it would be for staging and prod.
const installedNamespace = "nomad-runner-system"

func startInstallation(ctx context.Context, name string, cfg *rest.Config, c client.Client) *installation {
	GinkgoHelper()
	// The API server makes kube-system shortly after it starts.
	Eventually(func(ctx context.Context) error {
		return c.Get(ctx, client.ObjectKey{Name: controllers.ClusterIdentityNamespace}, &corev1.Namespace{})
	}).WithContext(ctx).Should(Succeed())
	mgr, err := ctrl.NewManager(rest.CopyConfig(cfg), ctrl.Options{
		Scheme:                 controlplane.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())

	// What main.go does when --operator-instance is not set.
	instance, err := controllers.ResolveInstance(ctx, mgr.GetAPIReader(), "", installedNamespace)
	Expect(err).NotTo(HaveOccurred())
	counter := nomaddev.NewCounter()
	b, err := nomadbridge.NewClientFromConfig(nomadbridge.Config{
		Address: agent.Addr, Instance: instance,
		WrapTransport: func(next http.RoundTripper) http.RoundTripper { counter.Next = next; return counter },
	})
	Expect(err).NotTo(HaveOccurred())

	mgrCtx, cancel := context.WithCancel(logf.IntoContext(context.Background(), logf.Log.WithName(name)))
	Expect(controllers.Setup(mgrCtx, mgr, controllers.Options{
		Bridge:             b,
		OrphanInterval:     time.Second,
		NomadProbeInterval: 500 * time.Millisecond,
	})).To(Succeed())
	done := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		done <- mgr.Start(mgrCtx)
	}()
	DeferCleanup(func() {
		cancel()
		Eventually(done, 30*time.Second).Should(Receive(BeNil()), "manager %s did not stop", name)
	})
	return &installation{name: name, client: c, instance: instance, bridge: b, nomad: counter}
}

// fill makes an environment of idle runners in ns, claims one of them, and
// returns the runners once the pool is full again: the claimed one and idle Idle.
func (in *installation) fill(ctx context.Context, ns string, idle int) []v1alpha1.Runner {
	GinkgoHelper()
	Expect(in.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	fixtures.NewEnvironment(ctx, Default, in.client, ns, "python", int32(idle))
	var claimed *v1alpha1.Runner
	Eventually(func(g Gomega) {
		idle := in.runners(ctx, g, ns, v1alpha1.RunnerIdle)
		g.Expect(idle).NotTo(BeEmpty())
		claimed = &idle[0]
	}).WithContext(ctx).WithTimeout(90 * time.Second).WithPolling(300 * time.Millisecond).Should(Succeed())
	Expect(fixtures.Claim(ctx, in.client, claimed, claim.Options{Holder: in.name + "-user", Token: "t"})).To(Succeed())

	var all []v1alpha1.Runner
	Eventually(func(g Gomega) {
		g.Expect(in.runners(ctx, g, ns, v1alpha1.RunnerIdle)).To(HaveLen(idle))
		g.Expect(in.runners(ctx, g, ns, v1alpha1.RunnerClaimed)).To(HaveLen(1))
		all = in.runners(ctx, g, ns, "")
		g.Expect(all).To(HaveLen(idle + 1))
	}).WithContext(ctx).WithTimeout(90 * time.Second).WithPolling(300 * time.Millisecond).Should(Succeed())
	return all
}

// runners lists the Runners of ns in a phase ("": all of them).
func (in *installation) runners(ctx context.Context, g Gomega, ns string, phase v1alpha1.RunnerPhase) []v1alpha1.Runner {
	all := fixtures.Runners(ctx, g, in.client, ns, "")
	if phase == "" {
		return all
	}
	return fixtures.ByPhase(all, phase)
}

// cleanUp ends the claims, deletes the environment and waits until the
// installation's runners and Nomad jobs are gone.
func (in *installation) cleanUp(ctx context.Context, ns string) {
	GinkgoHelper()
	Expect(fixtures.DeleteEnvironment(ctx, in.client, ns, "python")).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(in.runners(ctx, g, ns, "")).To(BeEmpty())
		jobs, err := in.bridge.ListRunnerJobs(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(jobs).To(BeEmpty())
	}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
}

var _ = Describe("Two installations on one Nomad", func() {
	// Staging and prod: two clusters, each with the operator installed the
	// same way (same namespace, no --operator-instance), the same namespace
	// and environment names, and one Nomad. Each orphan collector passes every
	// second; with a shared instance, each would take the other's jobs for
	// orphans (their Runners are not in its cluster) and stop them.
	It("derive different default instances, and neither collects the other's jobs, claimed ones included", func(ctx SpecContext) {
		By("starting a second cluster")
		cpB, err := controlplane.Start()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cpB.Stop)
		// As in the suite's cluster: the dev agent runs raw_exec only.
		Expect(controlplane.AllowRawExec(ctx, cpB.Client)).To(Succeed())

		staging := startInstallation(ctx, "staging", restCfg, k8sClient)
		prod := startInstallation(ctx, "prod", cpB.Config, cpB.Client)
		GinkgoWriter.Printf("instances: staging %s, prod %s\n", staging.instance, prod.instance)
		Expect(staging.instance).To(HavePrefix(installedNamespace + "-"))
		Expect(prod.instance).To(HavePrefix(installedNamespace + "-"))
		Expect(staging.instance).NotTo(Equal(prod.instance), "two clusters must not share the default instance")

		ns := fmt.Sprintf("runners-%d", time.Now().UnixNano())
		DeferCleanup(func(ctx context.Context) {
			staging.cleanUp(ctx, ns)
			prod.cleanUp(ctx, ns)
		}, NodeTimeout(150*time.Second))

		By("filling a pool in each cluster and claiming one runner of each")
		mine := map[*installation][]v1alpha1.Runner{
			staging: staging.fill(ctx, ns, 3),
			prod:    prod.fill(ctx, ns, 3),
		}
		jobs := map[string]*installation{} // Nomad job ID → the installation whose runner it is
		for in, runners := range mine {
			for _, r := range runners {
				jobs[r.Annotations[v1alpha1.JobIDAnnotation]] = in
			}
		}
		Expect(jobs).To(HaveLen(8))
		for id, in := range jobs {
			job, _, err := nomadAPI.Jobs().Info(id, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(job.Meta).To(HaveKeyWithValue(nomadbridge.MetaInstance, in.instance), "job %s", id)
		}

		By("letting both orphan collectors pass several times")
		before := map[*installation]int{staging: staging.nomad.Count("GET /v1/jobs"), prod: prod.nomad.Count("GET /v1/jobs")}
		Consistently(func(g Gomega) {
			for id, in := range jobs {
				job, _, err := nomadAPI.Jobs().Info(id, nil)
				g.Expect(err).NotTo(HaveOccurred(), "%s's job %s was purged", in.name, id)
				g.Expect(ptr.Deref(job.Stop, false)).To(BeFalse(), "%s's job %s was stopped", in.name, id)
				g.Expect(*job.Version).To(BeZero(), "%s's job %s was registered again", in.name, id)
				allocs, _, err := nomadAPI.Jobs().Allocations(id, false, nil)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(allocs).To(HaveLen(1), "%s's job %s", in.name, id)
				g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning), "%s's job %s", in.name, id)
			}
			for in, runners := range mine {
				now := in.runners(ctx, g, ns, "")
				g.Expect(now).To(HaveLen(len(runners)), "%s's runners", in.name)
				for _, r := range runners {
					cur := &v1alpha1.Runner{}
					g.Expect(in.client.Get(ctx, client.ObjectKeyFromObject(&r), cur)).To(Succeed(), "%s's runner %s", in.name, r.Name)
					g.Expect(cur.UID).To(Equal(r.UID))
					g.Expect(cur.Status.Phase).To(Equal(r.Status.Phase), "%s's runner %s", in.name, r.Name)
				}
			}
		}).WithContext(ctx).WithTimeout(6 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		for in, n := range before {
			Expect(in.nomad.Count("GET /v1/jobs")-n).To(BeNumerically(">=", 3),
				"%s's orphan collector listed its jobs fewer than 3 times in 6s", in.name)
		}
	}, SpecTimeout(5*time.Minute))
})
