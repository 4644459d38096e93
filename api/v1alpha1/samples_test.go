package v1alpha1_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

var _ = Describe("config/samples", func() {
	It("applies with the real kubectl, and its claim patch claims an Idle runner exactly once", func(ctx context.Context) {
		kubectl := os.Getenv("KUBECTL")
		if kubectl == "" {
			Skip("KUBECTL is not set (make test sets it)")
		}
		root, err := controlplane.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		samples := filepath.Join(root, "config", "samples")
		ns := newNamespace(ctx)
		kc := func(args ...string) (string, error) {
			out, err := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...).CombinedOutput()
			return string(out), err
		}

		out, err := kc("apply", "-k", samples)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("executionenvironment.execution.nomadrunner.io/python created"))
		Expect(out).To(ContainSubstring("executionenvironment.execution.nomadrunner.io/python-web created"))

		r := runner(ns, "python-sample", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		Expect(patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Idle"}}`)).To(Succeed())
		patch := []string{"patch", "runner/python-sample", "--subresource=status", "--type=json", "--patch-file", filepath.Join(samples, "claim-patch.json")}
		out, err = kc(patch...)
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = kc("get", "runner/python-sample", "-o", "jsonpath={.status.phase} {.status.claim.holder}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.TrimSpace(out)).To(Equal(string(v1alpha1.RunnerClaimed) + " alice"))

		out, err = kc(patch...)
		Expect(err).To(HaveOccurred(), "the second claim must be refused: %s", out)
	})
})
