package controllers_test

import (
	"context"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// The suite runs the real operator (both controllers, the Nomad event source,
// the orphan collector) in a manager against a real kube-apiserver + etcd and a
// real Nomad dev agent. Assertions read the API server directly and Nomad's API.
var (
	k8sClient  client.Client
	nomadAPI   *nomad.Client
	bridge     *nomadbridge.NomadClient
	kubeconfig string
	testEnv    *envtest.Environment
	// operatorNomad counts every Nomad request of the operator under test (the
	// tests' own reads through bridge are not counted) and can cut its event stream.
	operatorNomad *nomaddev.Counter
)

const instance = "controllers-suite"

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "controllers integration suite (real kube-apiserver, etcd and Nomad)")
}

var _ = BeforeSuite(func(ctx context.Context) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	agent, err := nomaddev.Start(ctx, nomaddev.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(agent.Stop)
	nomadAPI, err = agent.Client()
	Expect(err).NotTo(HaveOccurred())
	bridge, err = nomadbridge.NewClient(nomadAPI, instance)
	Expect(err).NotTo(HaveOccurred())

	operatorNomad = nomaddev.NewCounter()
	countedAPI, err := agent.CountedClient(operatorNomad)
	Expect(err).NotTo(HaveOccurred())
	operatorBridge, err := nomadbridge.NewClient(countedAPI, instance)
	Expect(err).NotTo(HaveOccurred())

	cp, err := controlplane.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cp.Stop)
	testEnv, k8sClient, kubeconfig = cp.Env, cp.Client, cp.Kubeconfig
	cfg := cp.Config

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 controlplane.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
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
	})
}, NodeTimeout(180*time.Second))

func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pool-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}
