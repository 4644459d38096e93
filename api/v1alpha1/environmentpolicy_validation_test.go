package v1alpha1_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

func environmentPolicy(spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "EnvironmentPolicy",
		"metadata":   map[string]any{"name": "policy-" + rand.String(6)},
		"spec":       spec,
	}}
}

var _ = Describe("EnvironmentPolicy validation", func() {
	create := func(ctx context.Context, spec map[string]any) error {
		p := environmentPolicy(spec)
		err := k8sClient.Create(ctx, p)
		if err == nil {
			DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, p)).To(Succeed()) })
		}
		return err
	}

	It("accepts an empty policy (every field at its secure default) and is cluster-scoped", func(ctx context.Context) {
		p := environmentPolicy(map[string]any{})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, p)).To(Succeed()) })
		got := &v1alpha1.EnvironmentPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: p.GetName()}, got)).To(Succeed())
		Expect(got.Namespace).To(BeEmpty())
		Expect(got.Spec).To(Equal(v1alpha1.EnvironmentPolicySpec{}))
	})

	DescribeTable("refuses bad fields, naming them",
		func(ctx context.Context, spec map[string]any, field, why string) {
			expectInvalid(create(ctx, spec), field, why)
		},
		Entry("an unknown permission", map[string]any{"allow": []any{"Everything"}}, "spec.allow[0]", "Unsupported value"),
		Entry("a duplicate permission", map[string]any{"allow": []any{"Vault", "Vault"}}, "spec.allow[1]", "Duplicate value"),
		Entry("an empty driver", map[string]any{"drivers": []any{""}}, "spec.drivers[0]", "at least 1 chars long"),
		Entry("a priority above Nomad's", map[string]any{"maxPriority": 101}, "spec.maxPriority", "less than or equal to 100"),
		Entry("a priority of 0", map[string]any{"maxPriority": 0}, "spec.maxPriority", "greater than or equal to 1"),
		Entry("memory below Nomad's floor", map[string]any{"resources": map[string]any{"maxMemoryMB": 5}}, "spec.resources.maxMemoryMB", "greater than or equal to 10"),
		Entry("no pids", map[string]any{"resources": map[string]any{"maxPids": 0}}, "spec.resources.maxPids", "greater than or equal to 1"),
		Entry("an empty Nomad namespace", map[string]any{"nomad": map[string]any{"namespaces": []any{""}}}, "spec.nomad.namespaces[0]", "at least 1 chars long"),
	)

	It("has a sample that applies with the real kubectl", func(ctx context.Context) {
		kubectl := os.Getenv("KUBECTL")
		if kubectl == "" {
			Skip("KUBECTL is not set (make test sets it)")
		}
		root, err := controlplane.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		sample := filepath.Join(root, "config", "samples", "execution_v1alpha1_environmentpolicy.yaml")
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "-f", sample).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("environmentpolicy.execution.nomadrunner.io/courses created"))
		DeferCleanup(func(ctx context.Context) {
			Expect(k8sClient.Delete(ctx, &v1alpha1.EnvironmentPolicy{ObjectMeta: metav1.ObjectMeta{Name: "courses"}})).To(Succeed())
		})
		got := &v1alpha1.EnvironmentPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "courses"}, got)).To(Succeed())
		Expect(got.Spec.Drivers).To(Equal([]string{"docker"}))
		Expect(*got.Spec.Resources.MaxPids).To(BeEquivalentTo(256))
	})
})
