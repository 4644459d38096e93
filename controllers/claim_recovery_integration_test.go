package controllers_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

// lossyTransport sits between a client and the real API server and, while
// armed, breaks the next requests of one method on runners. With forward set
// it lets the request through, reads the API server's whole answer (so the
// write has been done and answered), then reports a reset connection instead:
// the answer is lost. Without it the request never leaves: the request is lost.
// Every other request passes untouched.
type lossyTransport struct {
	next http.RoundTripper

	mu        sync.Mutex
	method    string
	subpath   string // "status" for runners/NAME/status, "" for runners/NAME
	remaining int
	forward   bool
	seen      []string // runner names of every matching request
	broken    []string // runner names of the requests broken
	codes     []int    // the API server's answers to the broken requests it got
}

func (t *lossyTransport) arm(method, subpath string, n int, forward bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.method, t.subpath, t.remaining, t.forward = method, subpath, n, forward
	t.seen, t.broken, t.codes = nil, nil, nil
}

func (t *lossyTransport) record() (seen, broken []string, codes []int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.seen...), append([]string(nil), t.broken...), append([]int(nil), t.codes...)
}

// runnerOf returns the runner a request addresses and the subresource, if any.
func runnerOf(p string) (name, subpath string, ok bool) {
	prefix := "/apis/" + v1alpha1.GroupVersion.String() + "/namespaces/"
	tail, found := strings.CutPrefix(p, prefix)
	if !found {
		return "", "", false
	}
	parts := strings.Split(tail, "/") // NS, runners, NAME[, SUB]
	if len(parts) < 3 || parts[1] != "runners" || len(parts) > 4 {
		return "", "", false
	}
	if len(parts) == 4 {
		subpath = parts[3]
	}
	return parts[2], subpath, true
}

func (t *lossyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	name, sub, ok := runnerOf(path.Clean(req.URL.Path))
	t.mu.Lock()
	match := ok && req.Method == t.method && sub == t.subpath
	breakIt := match && t.remaining > 0
	if match {
		t.seen = append(t.seen, name)
	}
	if breakIt {
		t.remaining--
		t.broken = append(t.broken, name)
	}
	forward := t.forward
	t.mu.Unlock()
	if !breakIt {
		return t.next.RoundTrip(req)
	}
	if forward {
		resp, err := t.next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		t.mu.Lock()
		t.codes = append(t.codes, resp.StatusCode)
		t.mu.Unlock()
	} else if req.Body != nil {
		_ = req.Body.Close()
	}
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
}

var _ = Describe("Claims whose answer is lost (recover)", func() {
	var (
		ns    string
		lossy *lossyTransport
		c     client.Client
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx)
		lossy = &lossyTransport{}
		cfg := rest.CopyConfig(testEnv.Config)
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			lossy.next = rt
			return lossy
		}
		var err error
		c, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
		Expect(err).NotTo(HaveOccurred())
	})

	// claimedRunners returns the runners of the namespace that carry a claim.
	claimedRunners := func(ctx context.Context) map[string]string {
		GinkgoHelper()
		list := &v1alpha1.RunnerList{}
		Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		tokens := map[string]string{}
		for _, rn := range list.Items {
			if rn.Status.Claim != nil {
				tokens[rn.Name] = rn.Status.Claim.Token
			}
		}
		return tokens
	}

	It("recovers a claim whose answer was lost after the API server stored it: the runner is ours, claimed once, no other taken", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)

		lossy.arm(http.MethodPatch, "status", 1, true)
		token := "t-lost-" + ns
		st := &claim.Stats{}
		rn, err := claim.Claim(ctx, c, ns, "python", claim.Options{Holder: "lost", Token: token, Stats: st})
		Expect(err).NotTo(HaveOccurred(), "a claim the API server stored must be returned, not reported as failed")
		Expect(rn.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Expect(rn.Status.Claim.Token).To(Equal(token))

		seen, broken, codes := lossy.record()
		Expect(broken).To(Equal([]string{rn.Name}), "the lost answer was the claim of the runner returned")
		Expect(codes).To(Equal([]int{http.StatusOK}), "the API server stored the claim whose answer was lost")
		Expect(seen).To(Equal([]string{rn.Name}), "one claim patch and no other: the runner was read back, not claimed again")
		Expect(st.Patches).To(Equal(1))
		Expect(st.ReadBacks).To(Equal(1))
		Expect(st.Conflicts).To(BeZero())

		Expect(claimedRunners(ctx)).To(Equal(map[string]string{rn.Name: token}), "no other runner was claimed by this call")
		fresh := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), fresh)).To(Succeed())
		Expect(fresh.Status.Claim.ClaimedAt).To(Equal(rn.Status.Claim.ClaimedAt))
		expectIdlePool(ctx, ns, "python", 3, 1)

		Expect(claim.Release(ctx, c, rn, token)).To(Succeed())
		expectIdlePool(ctx, ns, "python", 3, 0)
	}, SpecTimeout(180*time.Second))

	It("recovers a claim whose request was lost before the API server got it: the same runner is claimed by a second send, once", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)

		lossy.arm(http.MethodPatch, "status", 1, false)
		token := "t-dropped-" + ns
		st := &claim.Stats{}
		rn, err := claim.Claim(ctx, c, ns, "python", claim.Options{Holder: "dropped", Token: token, Stats: st})
		Expect(err).NotTo(HaveOccurred())
		Expect(rn.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Expect(rn.Status.Claim.Token).To(Equal(token))

		seen, broken, codes := lossy.record()
		Expect(broken).To(Equal([]string{rn.Name}))
		Expect(codes).To(BeEmpty(), "the first patch never reached the API server")
		Expect(seen).To(Equal([]string{rn.Name, rn.Name}), "read back Idle, the same patch was sent again to the same runner")
		Expect(st.Patches).To(Equal(2))
		Expect(st.ReadBacks).To(Equal(1))
		Expect(claimedRunners(ctx)).To(Equal(map[string]string{rn.Name: token}), "no other runner was claimed by this call")
		expectIdlePool(ctx, ns, "python", 3, 1)
	}, SpecTimeout(180*time.Second))

	It("recovers a renew and a release whose answers were lost", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)
		token := "t-renew-" + ns
		rn, err := claim.Claim(ctx, c, ns, "python", claim.Options{Holder: "renewer", Token: token})
		Expect(err).NotTo(HaveOccurred())
		Expect(rn.Status.Claim.LastActivityTime).To(BeNil())

		lossy.arm(http.MethodPatch, "status", 1, true)
		Expect(claim.Renew(ctx, c, rn, token)).To(Succeed(), "a renew whose answer was lost is sent again")
		seen, broken, codes := lossy.record()
		Expect(broken).To(Equal([]string{rn.Name}))
		Expect(codes).To(Equal([]int{http.StatusOK}))
		Expect(seen).To(Equal([]string{rn.Name, rn.Name}))
		Expect(rn.Status.Claim.LastActivityTime).NotTo(BeNil())
		fresh := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), fresh)).To(Succeed())
		Expect(fresh.Status.Claim.LastActivityTime).NotTo(BeNil())
		Expect(fresh.Status.Claim.Token).To(Equal(token))

		lossy.arm(http.MethodDelete, "", 1, true)
		Expect(claim.Release(ctx, c, rn, token)).To(Succeed(), "a release whose delete was stored but not answered is done")
		_, broken, codes = lossy.record()
		Expect(broken).To(Equal([]string{rn.Name}))
		Expect(codes).To(HaveLen(1), "the delete reached the API server")
		Expect(codes[0]).To(BeNumerically("<", 300), "and the API server did it")
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), &v1alpha1.Runner{}))
		}).WithTimeout(60 * time.Second).Should(BeTrue())
		expectIdlePool(ctx, ns, "python", 1, 0)
	}, SpecTimeout(180*time.Second))

	It("stores the default inactivity timeout when a claim names none, and 0 with claim.NoInactivityTimeout", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		expectIdlePool(ctx, ns, "python", 2, 0)

		stored := func(rn *v1alpha1.Runner) int32 {
			GinkgoHelper()
			fresh := &v1alpha1.Runner{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), fresh)).To(Succeed())
			return fresh.Status.Claim.InactivityTimeoutSeconds
		}
		dflt, err := claim.Claim(ctx, k8sClient, ns, "python", claim.Options{Holder: "default"})
		Expect(err).NotTo(HaveOccurred())
		Expect(stored(dflt)).To(BeEquivalentTo(claim.DefaultInactivityTimeout/time.Second), "a claim without a timeout must not be held forever")
		Expect(stored(dflt)).To(BeNumerically(">", 0))

		never, err := claim.Claim(ctx, k8sClient, ns, "python", claim.Options{Holder: "never", InactivityTimeout: claim.NoInactivityTimeout})
		Expect(err).NotTo(HaveOccurred())
		Expect(stored(never)).To(BeZero(), "the explicit opt-out stores 0, which the operator reads as never")
	}, SpecTimeout(180*time.Second))

	It("the plugin's claim stores the default inactivity timeout, and 0 with --timeout 0", func(ctx SpecContext) {
		root, err := controlplane.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		plugin := filepath.Join(GinkgoT().TempDir(), "kubectl-nomadrunner")
		build := exec.CommandContext(ctx, "go", "build", "-o", plugin, "./cmd/kubectl-nomadrunner")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out)

		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		expectIdlePool(ctx, ns, "python", 2, 0)
		claimWith := func(args ...string) int32 {
			GinkgoHelper()
			cmd := exec.CommandContext(ctx, plugin, append([]string{"claim", "python", "--kubeconfig", kubeconfig, "-n", ns, "-o", "json"}, args...)...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			Expect(err).NotTo(HaveOccurred(), stderr.String())
			rn := &v1alpha1.Runner{}
			Expect(json.Unmarshal(out, rn)).To(Succeed())
			fresh := &v1alpha1.Runner{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), fresh)).To(Succeed())
			return fresh.Status.Claim.InactivityTimeoutSeconds
		}
		Expect(claimWith()).To(BeEquivalentTo(claim.DefaultInactivityTimeout / time.Second))
		Expect(claimWith("--timeout", "0")).To(BeZero())
	}, SpecTimeout(240*time.Second))
})

// staleList is a claimer's client whose runner lists lag behind the API
// server, as an informer cache does: deletions are not shown yet, and the
// first list holds only the runner named first.
type staleList struct {
	client.Client
	first string
	lists int
}

func (s *staleList) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := s.Client.List(ctx, list, opts...); err != nil {
		return err
	}
	runners, ok := list.(*v1alpha1.RunnerList)
	if !ok {
		return nil
	}
	s.lists++
	var shown []v1alpha1.Runner
	for _, rn := range runners.Items {
		rn.DeletionTimestamp = nil
		if s.lists == 1 && rn.Name != s.first {
			continue
		}
		shown = append(shown, rn)
	}
	runners.Items = shown
	return nil
}

// statusCodes records the API server's answer to every claim patch, by runner.
type statusCodes struct {
	next  http.RoundTripper
	mu    sync.Mutex
	codes map[string][]int
}

func (t *statusCodes) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if name, sub, ok := runnerOf(path.Clean(req.URL.Path)); ok && err == nil && req.Method == http.MethodPatch && sub == "status" {
		t.mu.Lock()
		t.codes[name] = append(t.codes[name], resp.StatusCode)
		t.mu.Unlock()
	}
	return resp, err
}

var _ = Describe("A claim on a runner being deleted that the claimer's cache still shows Idle", func() {
	It("is refused by the policy, and the library moves on to another runner", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)
		doomed := idle[0]

		// A scale-down the claimer has not seen: the runner is deleted, and a
		// finalizer of the test's keeps it Terminating while the claim runs.
		const hold = "test.nomadrunner.io/hold"
		patch := client.MergeFrom(doomed.DeepCopy())
		doomed.Finalizers = append(doomed.Finalizers, hold)
		Expect(k8sClient.Patch(ctx, &doomed, patch)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			rn := &v1alpha1.Runner{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&doomed), rn); err == nil {
				patch := client.MergeFrom(rn.DeepCopy())
				controllerutil.RemoveFinalizer(rn, hold)
				Expect(client.IgnoreNotFound(k8sClient.Patch(ctx, rn, patch))).To(Succeed())
			}
		})
		Expect(k8sClient.Delete(ctx, &doomed)).To(Succeed())
		Eventually(func(g Gomega) {
			rn := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&doomed), rn)).To(Succeed())
			g.Expect(rn.DeletionTimestamp.IsZero()).To(BeFalse())
			g.Expect(rn.Status.Phase).To(Equal(v1alpha1.RunnerIdle))
		}).Should(Succeed())

		cfg, username := userConfigBoundTo(ctx, ns, shippedRole(ctx, "claimer_role.yaml", ns), "late")
		codes := &statusCodes{codes: map[string][]int{}}
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { codes.next = rt; return codes }
		direct, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
		Expect(err).NotTo(HaveOccurred())

		stats := &claim.Stats{}
		held, err := claim.Claim(ctx, &staleList{Client: direct, first: doomed.Name}, ns, "python",
			claim.Options{Holder: "late", Wait: true, Stats: stats})
		Expect(err).NotTo(HaveOccurred())
		Expect(held.Name).NotTo(Equal(doomed.Name))
		Expect(held.Status.Claim.User).To(Equal(username))

		codes.mu.Lock()
		defer codes.mu.Unlock()
		Expect(codes.codes[doomed.Name]).To(Equal([]int{http.StatusForbidden}), "one claim patch on the terminating runner, refused")
		Expect(codes.codes[held.Name]).To(Equal([]int{http.StatusOK}))
		Expect(stats.Patches).To(Equal(2))
		Expect(stats.Conflicts).To(Equal(1))
		rn := &v1alpha1.Runner{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&doomed), rn)).To(Succeed())
		Expect(rn.Status.Claim).To(BeNil())
	})
})
