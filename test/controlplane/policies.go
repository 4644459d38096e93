package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// PolicyObjects reads the admission policies and their bindings that
// config/policy ships, as `kubectl apply -k config/policy` would create them.
func PolicyObjects() ([]*unstructured.Unstructured, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "policy", "*.yaml"))
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs, err := DecodeYAML(raw)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", f, err)
		}
		objs = append(objs, docs...)
	}
	if len(objs) == 0 {
		return nil, errors.New("no admission policies in config/policy")
	}
	return objs, nil
}

// DecodeYAML reads the objects of a multi-document YAML (or JSON) stream,
// skipping empty documents.
func DecodeYAML(raw []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// InstallPolicies creates the shipped admission policies and waits until the
// API server enforces them: a policy takes effect a moment after it is created,
// and a suite that raced it would prove nothing.
func InstallPolicies(ctx context.Context, env *envtest.Environment, admin client.Client) error {
	objs, err := PolicyObjects()
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := admin.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("install %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return waitForPolicies(ctx, env, admin)
}

// waitForPolicies probes, as a user allowed to claim but not to operate, with
// dry-run requests that store nothing: a claim must come back naming the
// probe user (the mutating policy) and a Runner create must be refused (the
// validating policy).
func waitForPolicies(ctx context.Context, env *envtest.Environment, admin client.Client) error {
	const probeUser = "policy-probe"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nro-policy-probe"}}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "probe"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1alpha1.GroupVersion.Group},
			Resources: []string{"runners", "runners/status"}, Verbs: []string{"create", "patch"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "probe"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: probeUser}},
	}
	idle := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "probe"},
		Spec:       v1alpha1.RunnerSpec{Environment: "probe"},
	}
	for _, o := range []client.Object{ns, role, binding, idle} {
		if err := admin.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create policy probe %T: %w", o, err)
		}
	}
	defer func() { _ = admin.Delete(context.Background(), idle) }()
	idle.Status.Phase = v1alpha1.RunnerIdle
	if err := admin.Status().Update(ctx, idle); err != nil {
		return fmt.Errorf("make policy probe runner idle: %w", err)
	}
	user, err := env.AddUser(envtest.User{Name: probeUser}, nil)
	if err != nil {
		return err
	}
	prober, err := client.New(user.Config(), client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	claim := []byte(`{"status":{"phase":"Claimed","claim":{"holder":"probe","token":"probe","claimedAt":"2026-01-01T00:00:00Z"}}}`)
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		forged := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, GenerateName: "probe-"}, Spec: idle.Spec}
		err := prober.Create(ctx, forged, client.DryRunAll)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "made by the operator") {
			last = fmt.Errorf("a Runner create by a non-operator was not refused by the policy: %v", err)
			continue
		}
		claimed := idle.DeepCopy()
		if err := prober.Status().Patch(ctx, claimed, client.RawPatch(types.MergePatchType, claim), client.DryRunAll); err != nil {
			last = fmt.Errorf("dry-run claim as %s: %w", probeUser, err)
			continue
		}
		if claimed.Status.Claim == nil || claimed.Status.Claim.User != probeUser {
			last = fmt.Errorf("a claim by %s was not stamped with its user: %+v", probeUser, claimed.Status.Claim)
			continue
		}
		return nil
	}
	return fmt.Errorf("admission policies not in effect after 30s: %w", last)
}
