package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

func runnerNamed(ns, name string) *v1alpha1.Runner {
	return &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.RunnerSpec{Environment: "python"},
	}
}

var _ = Describe("Claiming with the claim package", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	// claimAll runs n claimers at once and returns who got which runner.
	claimAll := func(ctx context.Context, n int, opts func(i int) claim.Options) (won map[string]string, errs []error) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		won = map[string]string{}
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				rn, err := claim.Claim(ctx, k8sClient, ns, "python", opts(i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				holder := opts(i).Holder
				Expect(won).NotTo(HaveKey(rn.Name), "runner %s handed to %s and %s", rn.Name, won[rn.Name], holder)
				won[rn.Name] = holder
			}()
		}
		wg.Wait()
		return won, errs
	}

	expectHeldBy := func(ctx context.Context, won map[string]string) {
		GinkgoHelper()
		for name, holder := range won {
			rn := &v1alpha1.Runner{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rn)).To(Succeed())
			Expect(rn.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
			Expect(rn.Status.Claim.Holder).To(Equal(holder), "runner %s", name)
		}
	}

	It("hands each runner to exactly one of 32 racing claimers; losers get a clear 'no idle runner'", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 10)
		expectIdlePool(ctx, ns, "python", 10, 0)

		won, errs := claimAll(ctx, 32, func(i int) claim.Options { return claim.Options{Holder: fmt.Sprintf("user-%02d", i)} })
		Expect(len(won) + len(errs)).To(Equal(32))
		Expect(len(won)).To(BeNumerically(">=", 10), "every idle runner could be claimed")
		for _, err := range errs {
			Expect(errors.Is(err, claim.ErrNoIdleRunner)).To(BeTrue(), "a loser must get ErrNoIdleRunner, got %v", err)
		}
		expectHeldBy(ctx, won)
	}, SpecTimeout(180*time.Second))

	It("serves 32 waiting claimers from a pool of 10 as runners keep arriving, each runner once", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 10)
		expectIdlePool(ctx, ns, "python", 10, 0)

		waitCtx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		won, errs := claimAll(waitCtx, 32, func(i int) claim.Options {
			return claim.Options{Holder: fmt.Sprintf("waiter-%02d", i), Wait: true}
		})
		Expect(errs).To(BeEmpty())
		Expect(won).To(HaveLen(32))
		expectHeldBy(ctx, won)
		expectIdlePool(ctx, ns, "python", 10, 32)
	}, SpecTimeout(240*time.Second))

	It("lets a user bound to the claimer role claim, renew and release, and nothing more", func(ctx SpecContext) {
		claimer, _ := userBoundTo(ctx, ns, shippedRole(ctx, "claimer_role.yaml", ns), "grader")
		var err error
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)
		var rn *v1alpha1.Runner
		Eventually(func() error { // the binding takes effect at once, but be patient with the authorizer cache
			rn, err = claim.Claim(ctx, claimer, ns, "python", claim.Options{Holder: "grader", Token: "t-g"})
			return err
		}).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(claim.Renew(ctx, claimer, rn, "t-g")).To(Succeed())

		By("being refused what a claimer must not do")
		rn.Spec.TemplateHash = "forged"
		Expect(apierrors.IsForbidden(claimer.Update(ctx, rn))).To(BeTrue(), "a claimer must not write a runner's spec")
		ee := &v1alpha1.ExecutionEnvironment{}
		Expect(claimer.Get(ctx, client.ObjectKey{Namespace: ns, Name: "python"}, ee)).To(Succeed())
		Expect(apierrors.IsForbidden(claimer.Delete(ctx, ee))).To(BeTrue(), "a claimer must not delete environments")
		Expect(apierrors.IsForbidden(claimer.Create(ctx, runnerNamed(ns, "forged")))).To(BeTrue(), "a claimer must not create runners")

		Expect(claim.Release(ctx, claimer, rn, "t-g")).To(Succeed())
		expectIdlePool(ctx, ns, "python", 1, 0)
	}, SpecTimeout(120*time.Second))

	It("claims through an informer cache with claim.IndexFields, and says what is missing without it", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		expectIdlePool(ctx, ns, "python", 2, 0)
		// A claimer service: reads from its own cache, writes to the API server.
		newCachedClient := func(index bool) client.Client {
			c, err := cache.New(testEnv.Config, cache.Options{Scheme: controlplane.Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
			Expect(err).NotTo(HaveOccurred())
			if index {
				Expect(claim.IndexFields(ctx, c)).To(Succeed())
			}
			_, err = c.GetInformer(ctx, &v1alpha1.Runner{})
			Expect(err).NotTo(HaveOccurred())
			cctx, cancel := context.WithCancel(ctx)
			DeferCleanup(cancel)
			go func() { _ = c.Start(cctx) }()
			Expect(c.WaitForCacheSync(ctx)).To(BeTrue())
			cl, err := client.New(testEnv.Config, client.Options{Scheme: controlplane.Scheme(), Cache: &client.CacheOptions{Reader: c}})
			Expect(err).NotTo(HaveOccurred())
			return cl
		}

		_, err := claim.Claim(ctx, newCachedClient(false), ns, "python", claim.Options{Holder: "svc"})
		Expect(err).To(MatchError(ContainSubstring("claim.IndexFields")))

		cached := newCachedClient(true)
		first, err := claim.Claim(ctx, cached, ns, "python", claim.Options{Holder: "svc", Token: "t-1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(first.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		// The cache may still show the first runner Idle: the claim's test op
		// refuses it, and Claim moves on to the other idle runner.
		second, err := claim.Claim(ctx, cached, ns, "python", claim.Options{Holder: "svc", Token: "t-2"})
		Expect(err).NotTo(HaveOccurred())
		Expect(second.Name).NotTo(Equal(first.Name))
		expectIdlePool(ctx, ns, "python", 2, 2)
	}, SpecTimeout(120*time.Second))

	It("renews only with the claim's token and releases by deleting the runner", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)
		rn, err := claim.Claim(ctx, k8sClient, ns, "python", claim.Options{Holder: "erin", Token: "t-erin", InactivityTimeout: time.Hour})
		Expect(err).NotTo(HaveOccurred())
		Expect(rn.Status.Claim.InactivityTimeoutSeconds).To(BeEquivalentTo(3600))

		Expect(claim.Renew(ctx, k8sClient, rn, "t-erin")).To(Succeed())
		Expect(rn.Status.Claim.LastActivityTime).NotTo(BeNil())
		Expect(errors.Is(claim.Renew(ctx, k8sClient, rn, "t-mallory"), claim.ErrNotHolder)).To(BeTrue())
		Expect(errors.Is(claim.Release(ctx, k8sClient, rn, "t-mallory"), claim.ErrNotHolder)).To(BeTrue())

		Expect(claim.Release(ctx, k8sClient, rn, "t-erin")).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(rn), &v1alpha1.Runner{}))
		}).Should(BeTrue())
		Expect(claim.Release(ctx, k8sClient, rn, "t-erin")).To(Succeed(), "releasing a released runner is fine")
		expectIdlePool(ctx, ns, "python", 1, 0)
	}, SpecTimeout(120*time.Second))
})
