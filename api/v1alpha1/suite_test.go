package v1alpha1_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

// The API's schema, defaults and CEL rules are checked against a real
// kube-apiserver with the generated CRDs: what the server accepts is the truth.
var (
	testEnv    *envtest.Environment
	k8sClient  client.Client
	kubeconfig string
)

func TestAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "API validation suite (real kube-apiserver)")
}

var _ = BeforeSuite(func() {
	var err error
	testEnv, err = controlplane.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(testEnv.Stop)

	k8sClient, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	// A kubeconfig for the real kubectl, as a user would have it.
	var cleanup func()
	kubeconfig, cleanup, err = controlplane.AdminKubeconfig(testEnv)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cleanup)
})

// newNamespace gives each spec its own namespace (envtest has no garbage
// collector, so nothing relies on namespace deletion to clean up).
func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "api-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}
