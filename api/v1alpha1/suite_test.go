package v1alpha1_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

// The API's schema, defaults and CEL rules are checked against a real
// kube-apiserver with the generated CRDs: what the server accepts is the truth.
var (
	k8sClient  client.Client
	kubeconfig string
)

func TestAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "API validation suite (real kube-apiserver)")
}

var _ = BeforeSuite(func() {
	cp, err := controlplane.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cp.Stop)
	k8sClient, kubeconfig = cp.Client, cp.Kubeconfig
})

// newNamespace gives each spec its own namespace (envtest has no garbage
// collector, so nothing relies on namespace deletion to clean up).
func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	return fixtures.NewNamespace(ctx, Default, k8sClient, "api-", nil)
}
