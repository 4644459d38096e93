package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

// expectInvalid asserts the API server refused a write as invalid, naming the
// field and saying why.
func expectInvalid(err error, field, why string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "the API server accepted it")
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
	Expect(err.Error()).To(ContainSubstring(field))
	Expect(err.Error()).To(ContainSubstring(why))
}

func environment(ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "ExecutionEnvironment",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
	return u
}

var _ = Describe("ExecutionEnvironment validation", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("accepts a minimal environment and fills the documented defaults", func(ctx context.Context) {
		ee := &v1alpha1.ExecutionEnvironment{
			ObjectMeta: metav1.ObjectMeta{Name: "python", Namespace: ns},
			Spec:       v1alpha1.ExecutionEnvironmentSpec{Image: "python:3.13-slim"},
		}
		// Send it without the zero-valued fields, as `kubectl apply` of a short manifest does.
		Expect(k8sClient.Create(ctx, environment(ns, "python", map[string]any{"image": "python:3.13-slim"}))).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ee), ee)).To(Succeed())
		Expect(ee.Spec).To(Equal(v1alpha1.ExecutionEnvironmentSpec{
			Image:              "python:3.13-slim",
			PrewarmingPoolSize: 0,
			CPULimit:           100,
			MemoryLimit:        128,
			NetworkAccess:      false,
		}))
	})

	It("accepts a full environment as written", func(ctx context.Context) {
		spec := map[string]any{
			"image": "node:22", "prewarmingPoolSize": int64(v1alpha1.MaxPrewarmingPoolSize),
			"cpuLimit": int64(1), "memoryLimit": int64(v1alpha1.MinMemoryLimitMB),
			"networkAccess": true, "exposedPorts": []any{int64(1), int64(8080), int64(65535)},
			"templateJob": `job "t" {}`,
			"nomad": map[string]any{
				"namespace": "runners", "region": "eu", "datacenters": []any{"dc1", "dc*"}, "nodePool": "sandbox",
			},
		}
		Expect(k8sClient.Create(ctx, environment(ns, "node", spec))).To(Succeed())
		ee := &v1alpha1.ExecutionEnvironment{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "node"}, ee)).To(Succeed())
		Expect(ee.Spec.ExposedPorts).To(Equal([]int32{1, 8080, 65535}))
		Expect(ee.Spec.Nomad).To(Equal(&v1alpha1.NomadPlacement{
			Namespace: "runners", Region: "eu", Datacenters: []string{"dc1", "dc*"}, NodePool: "sandbox",
		}))
	})

	DescribeTable("rejects invalid input, naming the field",
		func(ctx context.Context, name string, spec map[string]any, field, why string) {
			err := k8sClient.Create(ctx, environment(ns, name, spec))
			expectInvalid(err, field, why)
		},
		Entry("missing image", "e", map[string]any{}, "spec.image", "Required value"),
		Entry("empty image", "e", map[string]any{"image": ""}, "spec.image", "at least 1 chars long"),
		Entry("negative pool size", "e", map[string]any{"image": "i", "prewarmingPoolSize": int64(-1)},
			"spec.prewarmingPoolSize", "should be greater than or equal to 0"),
		Entry("pool above the cap", "e", map[string]any{"image": "i", "prewarmingPoolSize": int64(v1alpha1.MaxPrewarmingPoolSize + 1)},
			"spec.prewarmingPoolSize", "should be less than or equal to 1000"),
		Entry("cpu 0", "e", map[string]any{"image": "i", "cpuLimit": int64(0)},
			"spec.cpuLimit", "should be greater than or equal to 1"),
		Entry("memory below Nomad's 10 MB", "e", map[string]any{"image": "i", "memoryLimit": int64(9)},
			"spec.memoryLimit", "should be greater than or equal to 10"),
		Entry("port 0", "e", map[string]any{"image": "i", "networkAccess": true, "exposedPorts": []any{int64(0)}},
			"spec.exposedPorts[0]", "should be greater than or equal to 1"),
		Entry("port 70000", "e", map[string]any{"image": "i", "networkAccess": true, "exposedPorts": []any{int64(70000)}},
			"spec.exposedPorts[0]", "should be less than or equal to 65535"),
		Entry("duplicate ports", "e", map[string]any{"image": "i", "networkAccess": true, "exposedPorts": []any{int64(80), int64(80)}},
			"spec.exposedPorts[1]", "Duplicate value"),
		Entry("ports without networkAccess", "e", map[string]any{"image": "i", "exposedPorts": []any{int64(8080)}},
			"spec.exposedPorts", "exposedPorts can only be set when networkAccess is true"),
		Entry("ports with networkAccess false", "e", map[string]any{"image": "i", "networkAccess": false, "exposedPorts": []any{int64(8080)}},
			"spec.exposedPorts", "exposedPorts can only be set when networkAccess is true"),
		Entry("a Nomad namespace Nomad would refuse", "e", map[string]any{"image": "i", "nomad": map[string]any{"namespace": "no spaces"}},
			"spec.nomad.namespace", "should match"),
		Entry("an empty datacenter", "e", map[string]any{"image": "i", "nomad": map[string]any{"datacenters": []any{""}}},
			"spec.nomad.datacenters[0]", "at least 1 chars long"),
		Entry("a name too long for the runners' label", strings.Repeat("n", 64), map[string]any{"image": "i"},
			"metadata.name", "at most 63 characters"),
		Entry("an image too long", "e", map[string]any{"image": strings.Repeat("i", 1025)},
			"spec.image", "Too long"),
		Entry("an image that is not a string", "e", map[string]any{"image": int64(3)},
			"spec.image", "must be of type string"),
		Entry("a pool size that is not a number", "e", map[string]any{"image": "i", "prewarmingPoolSize": "ten"},
			"spec.prewarmingPoolSize", "must be of type integer"),
		Entry("cpu above the cap", "e", map[string]any{"image": "i", "cpuLimit": int64(1000001)},
			"spec.cpuLimit", "should be less than or equal to 1000000"),
		Entry("memory above the cap", "e", map[string]any{"image": "i", "memoryLimit": int64(1048577)},
			"spec.memoryLimit", "should be less than or equal to 1048576"),
		Entry("networkAccess that is not a bool", "e", map[string]any{"image": "i", "networkAccess": "yes"},
			"spec.networkAccess", "must be of type boolean"),
		Entry("more than 64 ports", "e", map[string]any{"image": "i", "networkAccess": true, "exposedPorts": manyPorts(65)},
			"spec.exposedPorts", "must have at most 64 items"),
		Entry("a template too long", "e", map[string]any{"image": "i", "templateJob": strings.Repeat("#", 131073)},
			"spec.templateJob", "Too long"),
		Entry("an empty Nomad namespace", "e", map[string]any{"image": "i", "nomad": map[string]any{"namespace": ""}},
			"spec.nomad.namespace", "at least 1 chars long"),
		Entry("an empty Nomad region", "e", map[string]any{"image": "i", "nomad": map[string]any{"region": ""}},
			"spec.nomad.region", "at least 1 chars long"),
		Entry("a Nomad region too long", "e", map[string]any{"image": "i", "nomad": map[string]any{"region": strings.Repeat("r", 129)}},
			"spec.nomad.region", "Too long"),
		Entry("an empty node pool", "e", map[string]any{"image": "i", "nomad": map[string]any{"nodePool": ""}},
			"spec.nomad.nodePool", "at least 1 chars long"),
		Entry("more than 64 datacenters", "e", map[string]any{"image": "i", "nomad": map[string]any{"datacenters": manyStrings(65)}},
			"spec.nomad.datacenters", "must have at most 64 items"),
	)

	It("rejects exposedPorts added later without networkAccess", func(ctx context.Context) {
		Expect(k8sClient.Create(ctx, environment(ns, "web", map[string]any{"image": "i", "networkAccess": true, "exposedPorts": []any{int64(80)}}))).To(Succeed())
		patch := []byte(`{"spec":{"networkAccess":false}}`)
		err := k8sClient.Patch(ctx, environment(ns, "web", nil), client.RawPatch(types.MergePatchType, patch))
		expectInvalid(err, "spec.exposedPorts", "exposedPorts can only be set when networkAccess is true")
	})

	It("is scaled by `kubectl scale` through the scale subresource and listed with its columns", func(ctx context.Context) {
		kubectl := os.Getenv("KUBECTL")
		if kubectl == "" {
			Skip("KUBECTL is not set (make test sets it)")
		}
		Expect(k8sClient.Create(ctx, environment(ns, "python", map[string]any{"image": "python:3.13"}))).To(Succeed())

		run := func(args ...string) string {
			GinkgoHelper()
			cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...)
			out, err := cmd.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), out)
			return string(out)
		}
		Expect(run("scale", "ee/python", "--replicas=3")).To(ContainSubstring("scaled"))
		ee := &v1alpha1.ExecutionEnvironment{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "python"}, ee)).To(Succeed())
		Expect(ee.Spec.PrewarmingPoolSize).To(BeEquivalentTo(3))

		out := run("scale", "executionenvironment/python", "--replicas=0")
		Expect(out).To(ContainSubstring("scaled"))
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "python"}, ee)).To(Succeed())
		Expect(ee.Spec.PrewarmingPoolSize).To(BeZero())

		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "-n", ns, "scale", "ee/python", "--replicas=5000")
		out2, err := cmd.CombinedOutput()
		Expect(err).To(HaveOccurred(), "scaling above the cap must fail: %s", out2)
		Expect(string(out2)).To(ContainSubstring("spec.prewarmingPoolSize"))

		header := strings.Fields(strings.SplitN(run("get", "ee"), "\n", 2)[0])
		Expect(header).To(Equal([]string{"NAME", "IMAGE", "POOL", "IDLE", "CLAIMED", "READY", "AGE"}))
		Expect(run("get", "nomadrunner")).To(ContainSubstring("executionenvironment.execution.nomadrunner.io/python"))
	})
})

func runner(ns, name, env string) *v1alpha1.Runner {
	return &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.RunnerSpec{Environment: env, TemplateHash: "abc"},
	}
}

// patchStatus sends a raw patch to the status subresource, as a claimer would.
func patchStatus(ctx context.Context, r *v1alpha1.Runner, pt types.PatchType, patch string) error {
	return k8sClient.Status().Patch(ctx, r, client.RawPatch(pt, []byte(patch)))
}

// claimPatch is the patch a claim sends (claim.Patch), with a 60 s inactivity timeout.
func claimPatch(holder, token string) string {
	GinkgoHelper()
	raw, err := claim.Patch(claim.Options{Holder: holder, Token: token, InactivityTimeout: time.Minute}, time.Now())
	Expect(err).NotTo(HaveOccurred())
	return string(raw)
}

// claimJSON is the claim that claimPatch adds, for patches that write it otherwise.
func claimJSON(holder, token string) string {
	GinkgoHelper()
	var ops []struct {
		Value json.RawMessage `json:"value"`
	}
	Expect(json.Unmarshal([]byte(claimPatch(holder, token)), &ops)).To(Succeed())
	return string(ops[len(ops)-1].Value)
}

var _ = Describe("Runner validation", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	// setPhase writes a status phase the way the operator does.
	setPhase := func(ctx context.Context, r *v1alpha1.Runner, phase v1alpha1.RunnerPhase) {
		GinkgoHelper()
		Expect(patchStatus(ctx, r, types.MergePatchType, fmt.Sprintf(`{"status":{"phase":%q}}`, phase))).To(Succeed())
	}

	It("accepts a runner and its phases up to a claim, filling the claim's default timeout", func(ctx context.Context) {
		r := runner(ns, "python-x1", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		setPhase(ctx, r, v1alpha1.RunnerPending)
		setPhase(ctx, r, v1alpha1.RunnerIdle)
		noTimeout := `[{"op":"test","path":"/status/phase","value":"Idle"},
			{"op":"replace","path":"/status/phase","value":"Claimed"},
			{"op":"add","path":"/status/claim","value":{"holder":"alice","token":"t-1","claimedAt":"2026-11-23T10:00:00Z"}}]`
		Expect(patchStatus(ctx, r, types.JSONPatchType, noTimeout)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
		Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
		Expect(r.Status.Claim.Holder).To(Equal("alice"))
		Expect(r.Status.Claim.InactivityTimeoutSeconds).To(BeEquivalentTo(600), "a claim that names no timeout gets a finite one")

		By("renewing, which only moves lastActivityTime")
		Expect(patchStatus(ctx, r, types.MergePatchType, `{"status":{"claim":{"lastActivityTime":"2026-11-23T10:05:00Z"}}}`)).To(Succeed())
		By("failing the claimed runner, which keeps the claim so the holder learns why")
		Expect(patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Failed","reason":"OOMKilled"}}`)).To(Succeed())
	})

	It("rejects an empty or changed spec.environment", func(ctx context.Context) {
		expectInvalid(k8sClient.Create(ctx, runner(ns, "bad", "")), "spec.environment", "at least 1 chars long")

		r := runner(ns, "python-x2", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		r.Spec.Environment = "ruby"
		expectInvalid(k8sClient.Update(ctx, r), "spec.environment", "environment is immutable")
	})

	It("shows a new runner as Pending before any status write (the schema default)", func(ctx context.Context) {
		r := runner(ns, "python-x4", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
		Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerPending))
		Expect(r.Status.NomadJobID).To(BeEmpty())
		// Selectable as Pending too: the API server selects on the defaulted object.
		list := &v1alpha1.RunnerList{}
		Expect(k8sClient.List(ctx, list, client.InNamespace(ns), client.MatchingFields{v1alpha1.PhaseField: string(v1alpha1.RunnerPending)})).To(Succeed())
		Expect(list.Items).To(ContainElement(HaveField("Name", "python-x4")))
	})

	It("rejects a phase that does not exist", func(ctx context.Context) {
		r := runner(ns, "python-x3", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		err := patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Running"}}`)
		expectInvalid(err, "status.phase", "Unsupported value")
	})

	DescribeTable("rejects a claim on a runner that is not Idle, whatever the patch type",
		func(ctx context.Context, phase v1alpha1.RunnerPhase, pt types.PatchType) {
			r := runner(ns, "python-c", "python")
			Expect(k8sClient.Create(ctx, r)).To(Succeed())
			if phase != "" {
				setPhase(ctx, r, phase)
			}
			var patch string
			if pt == types.JSONPatchType {
				// Without the test op: the CEL rule alone must refuse it.
				patch = fmt.Sprintf(`[{"op":"add","path":"/status","value":{"phase":"Claimed","claim":%s}}]`, claimJSON("mallory", "t-m"))
			} else {
				patch = fmt.Sprintf(`{"status":{"phase":"Claimed","claim":%s}}`, claimJSON("mallory", "t-m"))
			}
			err := patchStatus(ctx, r, pt, patch)
			expectInvalid(err, "status.claim", "a runner can only be claimed while its status.phase is Idle")
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
			Expect(r.Status.Claim).To(BeNil())
		},
		Entry("no status written yet, merge patch", v1alpha1.RunnerPhase(""), types.MergePatchType),
		Entry("no status written yet, JSON patch", v1alpha1.RunnerPhase(""), types.JSONPatchType),
		Entry("Pending, merge patch", v1alpha1.RunnerPending, types.MergePatchType),
		Entry("Pending, JSON patch", v1alpha1.RunnerPending, types.JSONPatchType),
		Entry("Failed, merge patch", v1alpha1.RunnerFailed, types.MergePatchType),
	)

	Context("on a Claimed runner", func() {
		var r *v1alpha1.Runner
		BeforeEach(func(ctx context.Context) {
			r = runner(ns, "python-held", "python")
			Expect(k8sClient.Create(ctx, r)).To(Succeed())
			setPhase(ctx, r, v1alpha1.RunnerIdle)
			Expect(patchStatus(ctx, r, types.JSONPatchType, claimPatch("alice", "t-alice"))).To(Succeed())
		})

		It("refuses a second claim with the test op (the race loser's patch)", func(ctx context.Context) {
			err := patchStatus(ctx, r, types.JSONPatchType, claimPatch("bob", "t-bob"))
			// The API server answers a failed test op with a bare 422 Invalid (no
			// causes); a claimer takes it as "lost the race" and tries another runner.
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
			Expect(r.Status.Claim.Holder).To(Equal("alice"))
			Expect(r.Status.Claim.Token).To(Equal("t-alice"))
		})

		DescribeTable("rejects taking or undoing the claim",
			func(ctx context.Context, pt types.PatchType, patch, field, why string) {
				err := patchStatus(ctx, r, pt, patch)
				expectInvalid(err, field, why)
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
				Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
				Expect(r.Status.Claim.Holder).To(Equal("alice"))
				Expect(r.Status.Claim.Token).To(Equal("t-alice"))
			},
			Entry("a merge patch changing the holder", types.MergePatchType,
				`{"status":{"claim":{"holder":"mallory"}}}`, "status.claim.holder", "holder cannot change once the runner is claimed"),
			Entry("a merge patch replacing holder and token", types.MergePatchType,
				`{"status":{"claim":{"holder":"mallory","token":"t-m"}}}`, "status.claim.holder", "holder cannot change"),
			Entry("a JSON patch replacing the whole claim", types.JSONPatchType,
				fmt.Sprintf(`[{"op":"replace","path":"/status/claim","value":%s}]`, claimJSON("mallory", "t-m")), "status.claim.holder", "holder cannot change"),
			Entry("a changed token", types.MergePatchType,
				`{"status":{"claim":{"token":"t-other"}}}`, "status.claim.token", "token cannot change"),
			Entry("a changed claimedAt", types.MergePatchType,
				`{"status":{"claim":{"claimedAt":"2020-01-01T00:00:00Z"}}}`, "status.claim.claimedAt", "claimedAt cannot change"),
			Entry("removing the claim", types.MergePatchType,
				`{"status":{"phase":"Idle","claim":null}}`, "status", "cannot"),
			Entry("back to Idle with the claim kept", types.MergePatchType,
				`{"status":{"phase":"Idle"}}`, "status.phase", "a Claimed runner can only become Failed"),
		)
	})

	DescribeTable("rejects a garbage claim patch on an Idle runner, naming the field, and leaves it unclaimed",
		func(ctx context.Context, pt types.PatchType, patch, field, why string) {
			r := runner(ns, "python-g", "python")
			Expect(k8sClient.Create(ctx, r)).To(Succeed())
			setPhase(ctx, r, v1alpha1.RunnerIdle)
			err := patchStatus(ctx, r, pt, patch)
			Expect(err).To(HaveOccurred(), "the API server accepted it")
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(err.Error()).To(ContainSubstring(why))
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
			Expect(r.Status.Phase).To(Equal(v1alpha1.RunnerIdle))
			Expect(r.Status.Claim).To(BeNil())
		},
		Entry("a claim without a token", types.JSONPatchType,
			`[{"op":"replace","path":"/status/phase","value":"Claimed"},{"op":"add","path":"/status/claim","value":{"holder":"a","claimedAt":"2026-11-23T10:00:00Z"}}]`,
			"status.claim.token", "Required value"),
		Entry("a holder that is a number", types.JSONPatchType,
			`[{"op":"replace","path":"/status/phase","value":"Claimed"},{"op":"add","path":"/status/claim","value":{"holder":7,"token":"t","claimedAt":"2026-11-23T10:00:00Z"}}]`,
			"status.claim.holder", "must be of type string"),
		Entry("a claimedAt that is no time", types.MergePatchType,
			`{"status":{"phase":"Claimed","claim":{"holder":"a","token":"t","claimedAt":"yesterday"}}}`,
			"claimedAt", "yesterday"),
		Entry("a negative inactivity timeout", types.MergePatchType,
			`{"status":{"phase":"Claimed","claim":{"holder":"a","token":"t","claimedAt":"2026-11-23T10:00:00Z","inactivityTimeoutSeconds":-1}}}`,
			"status.claim.inactivityTimeoutSeconds", "should be greater than or equal to 0"),
		Entry("an inactivity timeout above a week", types.MergePatchType,
			`{"status":{"phase":"Claimed","claim":{"holder":"a","token":"t","claimedAt":"2026-11-23T10:00:00Z","inactivityTimeoutSeconds":604801}}}`,
			"status.claim.inactivityTimeoutSeconds", "should be less than or equal to 604800"),
		Entry("a token too long", types.MergePatchType,
			fmt.Sprintf(`{"status":{"phase":"Claimed","claim":{"holder":"a","token":%q,"claimedAt":"2026-11-23T10:00:00Z"}}}`, strings.Repeat("t", 129)),
			"status.claim.token", "Too long"),
		Entry("a claim that is a string", types.MergePatchType,
			`{"status":{"phase":"Claimed","claim":"mine"}}`, "status.claim", "must be of type object"),
		Entry("a JSON patch on a path that does not exist", types.JSONPatchType,
			`[{"op":"test","path":"/status/phase","value":"Idle"},{"op":"replace","path":"/status/claim/holder","value":"a"}]`,
			"", "the server rejected our request"), // a whole-patch error: no field to name
		Entry("not JSON at all", types.JSONPatchType, `claim me`, "", "invalid JSON patch"),
	)

	It("requires a claim for phase Claimed and phase Claimed for a claim", func(ctx context.Context) {
		r := runner(ns, "python-x4", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		setPhase(ctx, r, v1alpha1.RunnerIdle)
		expectInvalid(patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Claimed"}}`),
			"status.claim", "claim is required when phase is Claimed")
		expectInvalid(patchStatus(ctx, r, types.MergePatchType, fmt.Sprintf(`{"status":{"claim":%s}}`, claimJSON("alice", "t"))),
			"status.phase", "phase must be Claimed when claim is set")
		expectInvalid(patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Claimed","claim":{"holder":"","token":"t","claimedAt":"2026-11-23T10:00:00Z"}}}`),
			"status.claim.holder", "at least 1 chars long")
	})

	It("keeps a Failed runner Failed", func(ctx context.Context) {
		r := runner(ns, "python-x5", "python")
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		setPhase(ctx, r, v1alpha1.RunnerFailed)
		expectInvalid(patchStatus(ctx, r, types.MergePatchType, `{"status":{"phase":"Idle"}}`),
			"status.phase", "a Failed runner stays Failed")
	})
})

func manyPorts(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = int64(1000 + i)
	}
	return out
}

func manyStrings(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf("dc%d", i)
	}
	return out
}
