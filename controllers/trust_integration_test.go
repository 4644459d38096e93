package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// shippedRole reads a ClusterRole of config/rbac and installs it under a name
// of the spec's own, so specs never share (or delete) each other's roles.
func shippedRole(ctx context.Context, file, ns string) string {
	GinkgoHelper()
	root, err := controlplane.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", file))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.Unmarshal(raw, role)).To(Succeed())
	role.Name = role.Name + "-" + ns
	Expect(k8sClient.Create(ctx, role)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, role)).To(Succeed()) })
	return role.Name
}

// userBoundTo returns a client of a real, non-admin user (no groups but
// system:authenticated) bound in ns to the given ClusterRole, and the name the
// API server authenticates it as.
func userBoundTo(ctx context.Context, ns, clusterRole, name string) (client.Client, string) {
	GinkgoHelper()
	cfg, username := userConfigBoundTo(ctx, ns, clusterRole, name)
	c, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	return c, username
}

// userConfigBoundTo is userBoundTo's user as a rest config, for a spec that
// wraps its transport.
func userConfigBoundTo(ctx context.Context, ns, clusterRole, name string) (*rest.Config, string) {
	GinkgoHelper()
	username := name + "-" + ns
	Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: username, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: username}},
	})).To(Succeed())
	user, err := testEnv.AddUser(envtest.User{Name: username}, nil)
	Expect(err).NotTo(HaveOccurred())
	return user.Config(), username
}

// refusedBy expects an API error from the admission policies: 403 Forbidden
// with a message that names the rule.
func refusedBy(err error, rule string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "expected a refusal naming %q", rule)
	Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "want 403 or 422, got %v", err)
	Expect(err.Error()).To(ContainSubstring(rule))
}

func getRunner(ctx context.Context, ns, name string) *v1alpha1.Runner {
	GinkgoHelper()
	rn := &v1alpha1.Runner{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rn)).To(Succeed())
	return rn
}

// jsonPatch, mergePatch and applyPatch write a runner's status the three
// ways a client can patch it.
func jsonPatch(ops ...map[string]any) client.Patch {
	raw, err := json.Marshal(ops)
	Expect(err).NotTo(HaveOccurred())
	return client.RawPatch(types.JSONPatchType, raw)
}

func mergePatch(status map[string]any) client.Patch {
	raw, err := json.Marshal(map[string]any{"status": status})
	Expect(err).NotTo(HaveOccurred())
	return client.RawPatch(types.MergePatchType, raw)
}

func applyPatch(name string, status map[string]any) client.Patch {
	raw, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "Runner",
		"metadata": map[string]any{"name": name}, "status": status,
	})
	Expect(err).NotTo(HaveOccurred())
	return client.RawPatch(types.ApplyPatchType, raw)
}

// claimOps are the operations of the patch a claim sends (claim.Patch), with
// the claim's user set to user unless it is empty.
func claimOps(holder, token, user string) []map[string]any {
	GinkgoHelper()
	raw, err := claim.Patch(claim.Options{Holder: holder, Token: token}, time.Now())
	Expect(err).NotTo(HaveOccurred())
	var ops []map[string]any
	Expect(json.Unmarshal(raw, &ops)).To(Succeed())
	if user != "" {
		ops[len(ops)-1]["value"].(map[string]any)["user"] = user
	}
	return ops
}

var _ = Describe("Trust boundaries: who may write a Runner", func() {
	var (
		ns             string
		alice, bob     client.Client
		aliceName      string
		bobName        string
		claimerRole    string
		claimAdminRole string
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx)
		claimerRole = shippedRole(ctx, "claimer_role.yaml", ns)
		claimAdminRole = shippedRole(ctx, "claim_admin_role.yaml", ns)
		alice, aliceName = userBoundTo(ctx, ns, claimerRole, "alice")
		bob, bobName = userBoundTo(ctx, ns, claimerRole, "bob")
	})

	It("stamps a claim with the user the API server authenticated, whatever the claimer wrote, and lets only that user renew and release it", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)

		By("claiming as alice while naming bob as the claim's user")
		Expect(alice.Status().Patch(ctx, idle[0].DeepCopy(), jsonPatch(claimOps("course-42", "t-a", bobName)...))).To(Succeed())
		held := getRunner(ctx, ns, idle[0].Name)
		Expect(held.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Expect(held.Status.Claim.User).To(Equal(aliceName), "the stored user is who made the claim")
		Expect(held.Status.Claim.Holder).To(Equal("course-42"), "holder stays free text")

		By("renewing: alice can, bob cannot, and nobody moves lastActivityTime back")
		Expect(claim.Renew(ctx, alice, held, "t-a")).To(Succeed())
		renewed := getRunner(ctx, ns, held.Name)
		later := renewed.Status.Claim.LastActivityTime.Add(time.Minute).UTC().Format(time.RFC3339)
		refusedBy(bob.Status().Patch(ctx, renewed.DeepCopy(), mergePatch(map[string]any{"claim": map[string]any{"lastActivityTime": later}})),
			"is claimed by user "+aliceName+": only that user renews the claim")
		earlier := renewed.Status.Claim.ClaimedAt.Add(-time.Hour).UTC().Format(time.RFC3339)
		refusedBy(alice.Status().Patch(ctx, renewed.DeepCopy(), mergePatch(map[string]any{"claim": map[string]any{"lastActivityTime": earlier}})),
			"lastActivityTime only moves forward")

		By("changing the claim itself: refused, also to its own user")
		refusedBy(alice.Status().Patch(ctx, renewed.DeepCopy(), mergePatch(map[string]any{"claim": map[string]any{"user": bobName}})),
			"user cannot change once the runner is claimed")
		refusedBy(alice.Status().Patch(ctx, renewed.DeepCopy(), mergePatch(map[string]any{"claim": map[string]any{"inactivityTimeoutSeconds": 1}})),
			"inactivityTimeoutSeconds cannot change")
		refusedBy(bob.Status().Patch(ctx, renewed.DeepCopy(), mergePatch(map[string]any{"claim": map[string]any{"inactivityTimeoutSeconds": 1}})),
			"inactivityTimeoutSeconds cannot change")

		By("releasing: bob is refused, alice releases")
		refusedBy(bob.Delete(ctx, renewed.DeepCopy()), "is claimed by user "+aliceName+": only that user, the operator, or a user granted the verb force-release")
		Expect(getRunner(ctx, ns, held.Name).DeletionTimestamp).To(BeNil(), "bob's delete left the runner alone")
		Expect(claim.Release(ctx, alice, renewed, "t-a")).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(held), &v1alpha1.Runner{}))
		}).Should(BeTrue())
		expectIdlePool(ctx, ns, "python", 2, 0)
	}, SpecTimeout(180*time.Second))

	It("refuses claimers every write of operator-observed status, with every patch type and PUT", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2)
		idle := expectIdlePool(ctx, ns, "python", 2, 0)
		target := idle[0]
		const rule = "are written by the operator only"
		const statusRule = "is written by the operator only"

		type attack struct {
			name  string
			patch client.Patch
			want  string
		}
		attacks := []attack{
			{"JSON patch of address", jsonPatch(map[string]any{"op": "replace", "path": "/status/address", "value": "203.0.113.7"}), statusRule},
			{"merge patch of ports", mergePatch(map[string]any{"ports": []any{map[string]any{"label": "http", "port": 8080, "hostIP": "203.0.113.7"}}}), statusRule},
			{"apply of allocationID", applyPatch(target.Name, map[string]any{"allocationID": "forged"}), statusRule},
			{"merge patch of nomadNamespace", mergePatch(map[string]any{"nomadNamespace": "prod"}), statusRule},
			{"Idle to Failed", mergePatch(map[string]any{"phase": "Failed", "reason": "OOMKilled"}), statusRule},
			{"a claim that also rewrites the address", jsonPatch(append(claimOps("h", "t", ""),
				map[string]any{"op": "replace", "path": "/status/address", "value": "203.0.113.7"})...), "status.address of runner " + target.Name + " " + rule},
			{"a claim that also rewrites the node", jsonPatch(append(claimOps("h", "t", ""),
				map[string]any{"op": "replace", "path": "/status/nodeName", "value": "evil"})...), "status.nodeName of runner"},
		}
		for _, a := range attacks {
			By(a.name)
			// Forced, so that server-side apply does not stop at the operator's
			// ownership of the fields before admission sees the write.
			opts := []client.SubResourcePatchOption{client.FieldOwner("attacker")}
			if a.patch.Type() == types.ApplyPatchType {
				opts = append(opts, client.ForceOwnership)
			}
			err := alice.Status().Patch(ctx, target.DeepCopy(), a.patch, opts...)
			refusedBy(err, a.want)
		}
		By("a PUT of the whole status: the claimer role has no update; a role that has it meets the policy")
		put := getRunner(ctx, ns, target.Name)
		put.Status.Address = "203.0.113.7"
		Expect(apierrors.IsForbidden(alice.Status().Update(ctx, put.DeepCopy()))).To(BeTrue())
		updater := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "status-updater"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"runners/status"}, Verbs: []string{"get", "update"}}},
		}
		Expect(k8sClient.Create(ctx, updater)).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mallory"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: updater.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "mallory-" + ns}},
		})).To(Succeed())
		malloryUser, err := testEnv.AddUser(envtest.User{Name: "mallory-" + ns}, nil)
		Expect(err).NotTo(HaveOccurred())
		mallory, err := client.New(malloryUser.Config(), client.Options{Scheme: controlplane.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error { return mallory.Status().Update(ctx, put.DeepCopy()) }).WithTimeout(10 * time.Second).
			Should(MatchError(ContainSubstring(statusRule)))
		put = getRunner(ctx, ns, target.Name)
		put.Status.Phase = v1alpha1.RunnerClaimed
		put.Status.Claim = &v1alpha1.RunnerClaim{Holder: "m", Token: "m", ClaimedAt: metav1.Now(), User: "mallory-" + ns}
		put.Status.Ports = []v1alpha1.RunnerPort{{Label: "http", Port: 8080}}
		refusedBy(mallory.Status().Update(ctx, put), "status.ports of runner "+target.Name+" are written by the operator only")

		after := getRunner(ctx, ns, target.Name)
		Expect(after.Status.Phase).To(Equal(v1alpha1.RunnerIdle))
		Expect(after.Status.Claim).To(BeNil())
		Expect(after.Status.Address).To(Equal(target.Status.Address), "no attack changed the runner's status")
		Expect(after.Status.Ports).To(Equal(target.Status.Ports))
		Expect(after.Status.AllocationID).To(Equal(target.Status.AllocationID))
		Expect(after.Status.NomadNamespace).To(Equal(target.Status.NomadNamespace))
		Expect(after.Status.NodeName).To(Equal(target.Status.NodeName))

		By("a Pending runner cannot be made Idle by a claimer")
		pending := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unmanaged"}, Spec: v1alpha1.RunnerSpec{Environment: "python"}}
		Expect(k8sClient.Create(ctx, pending)).To(Succeed())
		Expect(pending.Status.Phase).To(Equal(v1alpha1.RunnerPending))
		refusedBy(alice.Status().Patch(ctx, pending, mergePatch(map[string]any{"phase": "Idle"})), statusRule)

		By("claimers create no runners and delete no unclaimed ones")
		Expect(apierrors.IsForbidden(alice.Create(ctx, runnerNamed(ns, "forged")))).To(BeTrue())
		refusedBy(alice.Delete(ctx, target.DeepCopy()), "is not claimed: only the operator deletes unclaimed runners")
		expectIdlePool(ctx, ns, "python", 2, 0) // the unmanaged runner has no label: not in the pool
		Expect(k8sClient.Delete(ctx, pending)).To(Succeed())
	}, SpecTimeout(180*time.Second))

	It("refuses a claim on a runner that is being deleted", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		idle := expectIdlePool(ctx, ns, "python", 1, 0)
		// Hold the runner in Terminating with a finalizer of the test's own:
		// the operator purges its job and lets go of its own finalizer.
		rn := getRunner(ctx, ns, idle[0].Name)
		patch := client.MergeFrom(rn.DeepCopy())
		rn.Finalizers = append(rn.Finalizers, "test.example/hold")
		Expect(k8sClient.Patch(ctx, rn, patch)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			rn := &v1alpha1.Runner{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&idle[0]), rn); err == nil {
				patch := client.MergeFrom(rn.DeepCopy())
				rn.Finalizers = nil
				Expect(client.IgnoreNotFound(k8sClient.Patch(ctx, rn, patch))).To(Succeed())
			}
		})
		Expect(k8sClient.Delete(ctx, rn)).To(Succeed())
		terminating := getRunner(ctx, ns, rn.Name)
		Expect(terminating.DeletionTimestamp).NotTo(BeNil())
		Expect(terminating.Status.Phase).To(Equal(v1alpha1.RunnerIdle))

		refusedBy(alice.Status().Patch(ctx, terminating.DeepCopy(), jsonPatch(claimOps("h", "t", "")...)),
			"runner "+rn.Name+" is being deleted and cannot be claimed")
		Expect(getRunner(ctx, ns, rn.Name).Status.Claim).To(BeNil())
	}, SpecTimeout(120*time.Second))

	It("lets a user granted force-release release another user's claim", func(ctx SpecContext) {
		admin, _ := userBoundTo(ctx, ns, claimAdminRole, "platform-admin")
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)
		rn, err := claim.Claim(ctx, alice, ns, "python", claim.Options{Holder: "alice", Token: "t-a"})
		Expect(err).NotTo(HaveOccurred())
		refusedBy(bob.Delete(ctx, rn.DeepCopy()), "force-release")
		Expect(admin.Delete(ctx, rn.DeepCopy())).To(Succeed())
		expectIdlePool(ctx, ns, "python", 1, 0)
	}, SpecTimeout(120*time.Second))

	It("hands each runner to exactly one of 32 racing claimers acting as four users, with the policies in force", func(ctx SpecContext) {
		carol, _ := userBoundTo(ctx, ns, claimerRole, "carol")
		dave, _ := userBoundTo(ctx, ns, claimerRole, "dave")
		users := []client.Client{alice, bob, carol, dave}
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 10)
		expectIdlePool(ctx, ns, "python", 10, 0)

		type result struct {
			runner string
			err    error
		}
		results := make(chan result, 32)
		for i := range 32 {
			go func() {
				defer GinkgoRecover()
				rn, err := claim.Claim(ctx, users[i%4], ns, "python", claim.Options{Holder: fmt.Sprintf("h-%02d", i)})
				if err != nil {
					results <- result{err: err}
					return
				}
				results <- result{runner: rn.Name}
			}()
		}
		won := map[string]bool{}
		for range 32 {
			r := <-results
			if r.err != nil {
				Expect(r.err).To(MatchError(claim.ErrNoIdleRunner), "a loser must get ErrNoIdleRunner")
				continue
			}
			Expect(won).NotTo(HaveKey(r.runner), "runner %s handed out twice", r.runner)
			won[r.runner] = true
		}
		Expect(len(won)).To(BeNumerically(">=", 10))
		for name := range won {
			Expect(getRunner(ctx, ns, name).Status.Claim.User).To(MatchRegexp(`^(alice|bob|carol|dave)-`))
		}
	}, SpecTimeout(180*time.Second))
})

var _ = Describe("Trust boundaries: the operator touches only its own", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("never purges the foreign Nomad job a forged Runner names", func(ctx SpecContext) {
		foreign := "payments-api-" + ns
		_, _, err := nomadAPI.Jobs().Register(nomaddev.SleepJob(foreign, map[string]string{"team": "payments"}), nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _, _ = nomadAPI.Jobs().Deregister(foreign, true, nil) })

		// What an administrator could create by hand (the policies keep
		// everyone else from creating Runners at all).
		forged := &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "forged", Finalizers: []string{v1alpha1.RunnerFinalizer},
				Annotations: map[string]string{v1alpha1.JobIDAnnotation: foreign, v1alpha1.NomadNamespaceAnnotation: "default"}},
			Spec: v1alpha1.RunnerSpec{Environment: "python"},
		}
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		Expect(k8sClient.Delete(ctx, forged)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(forged), &v1alpha1.Runner{}))
		}).Should(BeTrue(), "the forged Runner's deletion ends")
		job, _, err := nomadAPI.Jobs().Info(foreign, nil)
		Expect(err).NotTo(HaveOccurred(), "the foreign job survives")
		Expect(*job.Status).NotTo(Equal("dead"))
		Expect(*job.Stop).To(BeFalse())
	}, SpecTimeout(90*time.Second))
})

var _ = Describe("Trust boundaries: environments", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("drains on deletion: idle runners go at once, the claimed one lives until released", func(ctx SpecContext) {
		claimerRole := shippedRole(ctx, "claimer_role.yaml", ns)
		alice, _ := userBoundTo(ctx, ns, claimerRole, "alice")
		ee := fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 3)
		expectIdlePool(ctx, ns, "python", 3, 0)
		held, err := claim.Claim(ctx, alice, ns, "python", claim.Options{Holder: "alice", Token: "t-a"})
		Expect(err).NotTo(HaveOccurred())
		expectIdlePool(ctx, ns, "python", 3, 1)

		Expect(k8sClient.Delete(ctx, ee)).To(Succeed())
		Eventually(func(g Gomega) {
			all := fixtures.Runners(ctx, g, k8sClient, ns, "python")
			g.Expect(all).To(HaveLen(1))
			g.Expect(all[0].Name).To(Equal(held.Name))
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).To(HaveLen(1))
			got := &v1alpha1.ExecutionEnvironment{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), got)).To(Succeed(), "the environment waits, Terminating")
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ReadyCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonWaitingForClaims))
			g.Expect(c.Message).To(ContainSubstring("waiting for 1 claimed runners"))
		}).WithTimeout(60 * time.Second).Should(Succeed())

		By("the claimed runner stays reachable: its allocation runs")
		Consistently(func(g Gomega) {
			allocs, err := bridge.JobAllocations(ctx, "default", held.Status.NomadJobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
			g.Expect(getRunner(ctx, ns, held.Name).Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		}).WithTimeout(3 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		Expect(claim.Release(ctx, alice, held, "t-a")).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(BeEmpty())
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).To(BeEmpty())
			g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), &v1alpha1.ExecutionEnvironment{}))).To(BeTrue())
		}).WithTimeout(60 * time.Second).Should(Succeed())
	}, SpecTimeout(240*time.Second))

	It("ends claims on deletion only for a user granted force-release", func(ctx SpecContext) {
		claimerRole := shippedRole(ctx, "claimer_role.yaml", ns)
		authorRole := shippedRole(ctx, "environment_editor_role.yaml", ns)
		adminRole := shippedRole(ctx, "claim_admin_role.yaml", ns)
		alice, _ := userBoundTo(ctx, ns, claimerRole, "alice")
		author, _ := userBoundTo(ctx, ns, authorRole, "author")
		admin, _ := userBoundTo(ctx, ns, adminRole, "platform-admin")
		ee := fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 1)
		expectIdlePool(ctx, ns, "python", 1, 0)
		_, err := claim.Claim(ctx, alice, ns, "python", claim.Options{Holder: "alice"})
		Expect(err).NotTo(HaveOccurred())

		endClaims := fixtures.EndClaimsPatch()
		refusedBy(author.Patch(ctx, ee.DeepCopy(), endClaims), "needs the RBAC verb force-release")
		Expect(author.Delete(ctx, ee.DeepCopy())).To(Succeed(), "the author may delete the environment")
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(HaveLen(1), "the claimed runner waits")
		}).WithTimeout(60 * time.Second).Should(Succeed())

		Expect(admin.Patch(ctx, ee.DeepCopy(), endClaims)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(BeEmpty())
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "python")).To(BeEmpty())
			g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), &v1alpha1.ExecutionEnvironment{}))).To(BeTrue())
		}).WithTimeout(60 * time.Second).Should(Succeed())
	}, SpecTimeout(180*time.Second))

	It("stops refilling at spec.maxRunners and says so, then refills as claims are released", func(ctx SpecContext) {
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "python", 2, func(s *v1alpha1.ExecutionEnvironmentSpec) { s.MaxRunners = ptrTo[int32](3) })
		expectIdlePool(ctx, ns, "python", 2, 0)
		var held []*v1alpha1.Runner
		for i := range 3 {
			rn, err := claim.Claim(ctx, k8sClient, ns, "python", claim.Options{Holder: fmt.Sprintf("h%d", i), Wait: true})
			Expect(err).NotTo(HaveOccurred())
			held = append(held, rn)
		}
		Eventually(func(g Gomega) {
			all := fixtures.Runners(ctx, g, k8sClient, ns, "python")
			g.Expect(all).To(HaveLen(3), "never more than maxRunners")
			ee := &v1alpha1.ExecutionEnvironment{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "python"}, ee)).To(Succeed())
			c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.PoolFilledCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonRunnerLimitReached))
			g.Expect(c.Message).To(ContainSubstring("the most spec.maxRunners allows (3)"))
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "python")).To(HaveLen(3))
		}).WithTimeout(3 * time.Second).Should(Succeed())

		Expect(claim.Release(ctx, k8sClient, held[0], held[0].Status.Claim.Token)).To(Succeed())
		Eventually(func(g Gomega) {
			all := fixtures.Runners(ctx, g, k8sClient, ns, "python")
			g.Expect(all).To(HaveLen(3))
			g.Expect(fixtures.ByPhase(all, v1alpha1.RunnerIdle)).To(HaveLen(1), "one released claim makes room for one idle runner")
		}).WithTimeout(60 * time.Second).Should(Succeed())
	}, SpecTimeout(180*time.Second))
})

func ptrTo[T any](v T) *T { return &v }
