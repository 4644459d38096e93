package controllers_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// The suite runs the real operator (both controllers, the Nomad event source,
// the orphan collector) in a manager against a real kube-apiserver + etcd and a
// real Nomad dev agent. Assertions read the API server directly and Nomad's API.
var (
	k8sClient client.Client
	// metricsURL and probesURL are the endpoints of the suite's manager.
	metricsURL, probesURL string
	operatorRBAC          *deployedRBAC
	nomadAPI              *nomad.Client
	bridge                *nomadbridge.NomadClient
	kubeconfig            string
	testEnv               *envtest.Environment
	// operatorNomad counts every Nomad request of the operator under test (the
	// tests' own reads through bridge are not counted) and can cut its event stream.
	operatorNomad *nomaddev.Counter
)

// instance is the suite operator's instance, derived at start as main.go
// derives it when --operator-instance is not set.
var instance string

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	// What the operator and Nomad usually take to get somewhere; waits that
	// need longer say so.
	fixtures.SetDefaultWaits(30 * time.Second)
	RunSpecs(t, "controllers integration suite (real kube-apiserver, etcd and Nomad)")
}

var _ = BeforeSuite(func(ctx context.Context) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	agent, err := nomaddev.Start(ctx, nomaddev.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(agent.Stop)
	nomadAPI, err = agent.Client()
	Expect(err).NotTo(HaveOccurred())

	cp, err := controlplane.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cp.Stop)
	testEnv, k8sClient, kubeconfig = cp.Env, cp.Client, cp.Kubeconfig
	// The dev agent runs raw_exec only, which the built-in policy refuses.
	Expect(controlplane.AllowRawExec(ctx, k8sClient)).To(Succeed())

	// The operator runs as config/default deploys it: as its ServiceAccount with
	// exactly the rendered RBAC, leader election in its namespace, and metrics
	// served over HTTPS to authorized callers only.
	operatorRBAC, err = renderDefault()
	Expect(err).NotTo(HaveOccurred())
	Expect(operatorRBAC.install(ctx, k8sClient)).To(Succeed())
	recorder := newRequestRecorder()
	cfg, err := operatorRBAC.managerConfig(testEnv, recorder)
	Expect(err).NotTo(HaveOccurred())
	metricsAddr, probesAddr := localAddr(), localAddr()
	metricsURL, probesURL = "https://"+metricsAddr+"/metrics", "http://"+probesAddr
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: controlplane.Scheme(),
		Metrics: metricsserver.Options{
			BindAddress: metricsAddr, SecureServing: true, FilterProvider: filters.WithAuthenticationAndAuthorization,
		},
		HealthProbeBindAddress:        probesAddr,
		LeaderElection:                true,
		LeaderElectionID:              "controllers-suite.execution.nomadrunner.io",
		LeaderElectionNamespace:       operatorRBAC.Namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(mgr.AddHealthzCheck("ping", healthz.Ping)).To(Succeed())

	// No --operator-instance: derived as main.go derives it, as the operator's
	// ServiceAccount (so the RBAC comparison sees the read of kube-system).
	instance, err = controllers.ResolveInstance(ctx, mgr.GetAPIReader(), "", operatorRBAC.Namespace)
	Expect(err).NotTo(HaveOccurred())
	Expect(instance).To(MatchRegexp("^" + operatorRBAC.Namespace + "-[0-9a-f]{10}$"))
	bridge, err = nomadbridge.NewClient(nomadAPI, instance)
	Expect(err).NotTo(HaveOccurred())
	// The operator's bridge is built as main.go builds it (so the Nomad request
	// metrics are real), over a counter of its requests.
	operatorNomad = nomaddev.NewCounter()
	operatorBridge, err := nomadbridge.NewClientFromConfig(nomadbridge.Config{
		Address: agent.Addr, Instance: instance,
		WrapTransport: func(http.RoundTripper) http.RoundTripper { return metrics.NomadTransport(operatorNomad) },
	})
	Expect(err).NotTo(HaveOccurred())

	mgrCtx, stop := context.WithCancel(context.Background())
	Expect(controllers.Setup(mgrCtx, mgr, controllers.Options{Bridge: operatorBridge, OrphanInterval: 2 * time.Second})).To(Succeed())
	done := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		done <- mgr.Start(mgrCtx)
	}()
	// Stop the manager before the control plane and Nomad (cleanups run last-in first-out).
	DeferCleanup(func() {
		stop()
		Eventually(done, 30*time.Second).Should(Receive(BeNil()))
		if suiteConfig, _ := GinkgoConfiguration(); len(suiteConfig.FocusStrings)+len(suiteConfig.SkipStrings)+len(suiteConfig.FocusFiles) == 0 &&
			suiteConfig.LabelFilter == "" && !specFailed {
			By("comparing the RBAC of config/default with the requests the operator made")
			expectExactRBAC(operatorRBAC, recorder.snapshot())
		}
	})
}, NodeTimeout(180*time.Second))

// specFailed skips the RBAC comparison after a failed spec, which may have
// stopped before using what it would have.
var specFailed bool

var _ = ReportAfterEach(func(r SpecReport) { specFailed = specFailed || r.Failed() })

// localAddr returns a free loopback address.
func localAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// newNamespace gives a spec a namespace of its own.
func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	return fixtures.NewNamespace(ctx, Default, k8sClient, "pool-", nil)
}
