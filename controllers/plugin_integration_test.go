package controllers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

var _ = Describe("The kubectl plugin", func() {
	var (
		ns, plugin string
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx)
		root, err := controlplane.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		plugin = filepath.Join(GinkgoT().TempDir(), "kubectl-nomadrunner")
		build := exec.CommandContext(ctx, "go", "build", "-o", plugin, "./cmd/kubectl-nomadrunner")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out)
	})

	// run runs the plugin as a user would; it returns stdout, stderr and the exit code.
	run := func(ctx context.Context, stdin string, args ...string) (string, string, int) {
		// Global flags right after the command, before any "--".
		full := append([]string{args[0], "--kubeconfig", kubeconfig, "-n", ns}, args[1:]...)
		cmd := exec.CommandContext(ctx, plugin, full...)
		cmd.Env = append(os.Environ(), "NOMAD_ADDR="+nomadAPI.Address())
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		return stdout.String(), stderr.String(), code
	}

	It("claims, execs with output and exit code, copies a folder both ways byte for byte, lists, renews and releases", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)

		out, errOut, code := run(ctx, "", "claim", "python", "--holder", "frank", "--token", "t-frank", "-o", "name")
		Expect(code).To(BeZero(), errOut)
		name := strings.TrimSpace(out)

		out, errOut, code = run(ctx, "", "exec", name, "--", "sh", "-c", "echo hello from $NOMAD_JOB_NAME; echo oops >&2; exit 3")
		Expect(code).To(Equal(3), errOut)
		Expect(errOut).To(Equal("oops\n"))
		Expect(out).To(HavePrefix("hello from python-"))
		out, _, code = run(ctx, "some input\n", "exec", "-i", name, "--", "cat")
		Expect(code).To(BeZero())
		Expect(out).To(Equal("some input\n"))

		By("copying a folder in and out")
		src := filepath.Join(GinkgoT().TempDir(), "project")
		Expect(os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755)).To(Succeed())
		blob := make([]byte, 300_000)
		_, _ = rand.Read(blob)
		files := map[string][]byte{"main.py": []byte("print('hi')\n"), "sub/data.bin": blob, "sub/deeper/empty": nil}
		for p, b := range files {
			Expect(os.WriteFile(filepath.Join(src, p), b, 0o644)).To(Succeed())
		}
		_, errOut, code = run(ctx, "", "cp", src, name+":upload")
		Expect(code).To(BeZero(), errOut)
		out, _, code = run(ctx, "", "exec", name, "--", "sh", "-c", "cat upload/project/main.py")
		Expect(code).To(BeZero())
		Expect(out).To(Equal("print('hi')\n"))

		back := GinkgoT().TempDir()
		_, errOut, code = run(ctx, "", "cp", name+":upload/project", back)
		Expect(code).To(BeZero(), errOut)
		for p, b := range files {
			got, err := os.ReadFile(filepath.Join(back, "project", p))
			Expect(err).NotTo(HaveOccurred())
			Expect(bytes.Equal(got, b)).To(BeTrue(), "%s differs after the round trip", p)
		}

		By("copying into a folder whose name starts with a dash")
		_, errOut, code = run(ctx, "", "cp", src, name+":-dash")
		Expect(code).To(BeZero(), errOut)
		out, _, code = run(ctx, "", "exec", name, "--", "cat", "./-dash/project/main.py")
		Expect(code).To(BeZero())
		Expect(out).To(Equal("print('hi')\n"))

		By("refusing a runner's symlink out of the folder, writing nothing outside it")
		_, errOut, code = run(ctx, "", "exec", name, "--", "sh", "-c", "mkdir -p evil/sub && echo x > evil/sub/f && ln -s /etc evil/etc")
		Expect(code).To(BeZero(), errOut)
		parent := GinkgoT().TempDir()
		dest := filepath.Join(parent, "dest")
		_, errOut, code = run(ctx, "", "cp", name+":evil", dest)
		Expect(code).NotTo(BeZero())
		Expect(errOut).To(ContainSubstring(`entry "evil/etc": symlink to the absolute path "/etc"`))
		entries, err := os.ReadDir(parent)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(HaveLen(1))
		Expect(entries[0].Name()).To(Equal("dest"))
		_, err = os.Lstat(filepath.Join(dest, "evil", "etc"))
		Expect(os.IsNotExist(err)).To(BeTrue(), "the link was made: %v", err)

		By("stopping at --max-bytes")
		_, errOut, code = run(ctx, "", "cp", name+":upload/project", GinkgoT().TempDir(), "--max-bytes", "1000")
		Expect(code).NotTo(BeZero())
		Expect(errOut).To(ContainSubstring("(raise --max-bytes)"))

		out, _, code = run(ctx, "", "list", "python")
		Expect(code).To(BeZero())
		Expect(out).To(MatchRegexp(name + `\s+python\s+Claimed\s+frank`))

		_, errOut, code = run(ctx, "", "renew", name, "--token", "wrong")
		Expect(code).NotTo(BeZero())
		Expect(errOut).To(ContainSubstring("not held with this token"))
		_, errOut, code = run(ctx, "", "renew", name, "--token", "t-frank")
		Expect(code).To(BeZero(), errOut)
		_, errOut, code = run(ctx, "", "release", name, "--token", "t-frank")
		Expect(code).To(BeZero(), errOut)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha1.Runner{}))
		}).Should(BeTrue())

		By("failing clearly on an empty pool")
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "python", 0)).To(Succeed())
		Eventually(func(g Gomega) { g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(BeEmpty()) }).Should(Succeed())
		_, errOut, code = run(ctx, "", "claim", "python")
		Expect(code).To(Equal(1))
		Expect(errOut).To(ContainSubstring("no idle runner"))
	}, SpecTimeout(180*time.Second))
})
