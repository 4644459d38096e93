package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

var _ = Describe("Manager RBAC", func() {
	It("lets the manager get the kube-system namespace that names its installation, and no other namespace", func(ctx SpecContext) {
		cfg, err := operatorRBAC.managerConfig(testEnv, newRequestRecorder())
		Expect(err).NotTo(HaveOccurred())
		asManager, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
		Expect(err).NotTo(HaveOccurred())

		Expect(asManager.Get(ctx, client.ObjectKey{Name: controllers.ClusterIdentityNamespace}, &corev1.Namespace{})).To(Succeed())
		derived, err := controllers.ResolveInstance(ctx, asManager, "", operatorRBAC.Namespace)
		Expect(err).NotTo(HaveOccurred())
		Expect(derived).To(Equal(instance), "the suite's operator derives the same instance")

		// (It lists and watches namespaces for the environment policies; a
		// get is granted on kube-system only.)
		err = asManager.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "get on another namespace: want 403, got %v", err)
	})
})

// The suite's operator runs as the ServiceAccount of config/default, with the
// RBAC objects `kubectl kustomize config/default` renders and nothing else, and
// records every API request it makes. A permission it lacks fails the specs
// (Forbidden); at the end of a full run, a granted permission it never used
// fails the suite. So the shipped RBAC is exactly what the controllers use.

// permission is one verb on one resource ("runners/status") of one API group.
type permission struct{ Group, Resource, Verb string }

func (p permission) String() string {
	return fmt.Sprintf("%s %s.%s", p.Verb, p.Resource, p.Group)
}

// notRequested are permissions the operator needs although it never sends a
// request for them, each with the reason.
var notRequested = map[permission]string{
	// The OwnerReferencesPermissionEnforcement admission plugin (on by default
	// in OpenShift, off in envtest) checks it when a Runner is created with an
	// owner reference that blocks its environment's deletion.
	{"execution.nomadrunner.io", "executionenvironments/finalizers", "update"}: "owner references with blockOwnerDeletion",
	// Informers start with a streaming watch (WatchList) where the API server
	// offers it, as envtest's does, and fall back to a LIST where it does not.
	{"execution.nomadrunner.io", "executionenvironments", "list"}: "informer fallback without WatchList",
	{"execution.nomadrunner.io", "runners", "list"}:               "informer fallback without WatchList",
	{"execution.nomadrunner.io", "environmentpolicies", "list"}:   "informer fallback without WatchList",
	{"", "namespaces", "list"}:                                    "informer fallback without WatchList",
	// No HTTP verb: the admission policies of config/policy ask the authorizer
	// for it to tell the operator from everyone else.
	{"execution.nomadrunner.io", "runners", "operate"}: "identifies the operator to the admission policies",
	// The events recorder patches an Event that repeats (an event series).
	{"events.k8s.io", "events", "patch"}: "event series",
}

// deployedRBAC is what config/default installs for the manager.
type deployedRBAC struct {
	ServiceAccount  string // namespace/name
	Namespace       string
	MetricsReader   string // ClusterRole to bind scrapers to
	granted         sets.Set[permission]
	objects         []*unstructured.Unstructured
	serviceAccounts sets.Set[string]
}

// renderDefault runs `kubectl kustomize config/default` and keeps the objects
// that grant the manager its permissions.
func renderDefault() (*deployedRBAC, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		kubectl = filepath.Join(root, "bin", "kubectl")
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/default: %w", err)
	}
	d := &deployedRBAC{granted: sets.New[permission](), serviceAccounts: sets.New[string]()}
	roles := map[string][]rbacv1.PolicyRule{} // "ClusterRole/name" or "Role/ns/name"
	var bindings []rbacv1.RoleBinding         // ClusterRoleBindings too, Namespace ""
	objs, err := controlplane.DecodeYAML(out)
	if err != nil {
		return nil, fmt.Errorf("decode rendered config/default: %w", err)
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "Namespace":
			d.Namespace = u.GetName()
		case "ServiceAccount":
			d.serviceAccounts.Insert(u.GetNamespace() + "/" + u.GetName())
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				return nil, err
			}
			roles[roleKey(u.GetKind(), u.GetNamespace(), u.GetName())] = r.Rules
			if slices.ContainsFunc(r.Rules, func(rule rbacv1.PolicyRule) bool { return slices.Contains(rule.NonResourceURLs, "/metrics") }) {
				d.MetricsReader = u.GetName()
			}
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
				return nil, err
			}
			bindings = append(bindings, b)
		default:
			continue // CRDs are installed by envtest; the Deployment and Service need a cluster
		}
		d.objects = append(d.objects, u)
	}
	if d.serviceAccounts.Len() != 1 {
		return nil, fmt.Errorf("config/default renders %d ServiceAccounts, want the manager's only", d.serviceAccounts.Len())
	}
	d.ServiceAccount = d.serviceAccounts.UnsortedList()[0]
	for _, b := range bindings {
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Namespace+"/"+s.Name == d.ServiceAccount
		}) {
			continue
		}
		ns := b.Namespace
		if b.RoleRef.Kind == "ClusterRole" {
			ns = ""
		}
		rules, ok := roles[roleKey(b.RoleRef.Kind, ns, b.RoleRef.Name)]
		if !ok {
			return nil, fmt.Errorf("binding %s refers to %s %s, which config/default does not render", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, rule := range rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						d.granted.Insert(permission{g, res, v})
					}
				}
			}
		}
	}
	return d, nil
}

func roleKey(kind, ns, name string) string {
	if kind == "ClusterRole" {
		return kind + "/" + name
	}
	return kind + "/" + ns + "/" + name
}

// install creates the rendered RBAC objects in the control plane.
func (d *deployedRBAC) install(ctx context.Context, c client.Client) error {
	for _, u := range d.objects {
		if err := c.Create(ctx, u.DeepCopy()); err != nil {
			return fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// managerConfig is a rest.Config that authenticates as the manager's
// ServiceAccount (a client certificate with the name and groups the API server
// gives that ServiceAccount's tokens) and records every request into rec.
func (d *deployedRBAC) managerConfig(env *envtest.Environment, rec *requestRecorder) (*rest.Config, error) {
	ns, name, _ := strings.Cut(d.ServiceAccount, "/")
	user, err := env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}, nil)
	if err != nil {
		return nil, err
	}
	cfg := user.Config()
	cfg.Wrap(rec.wrap)
	return cfg, nil
}

// compare returns the permissions used but not granted, and granted but never used.
func (d *deployedRBAC) compare(used sets.Set[permission]) (missing, unused []string) {
	for p := range used.Difference(d.granted) {
		missing = append(missing, p.String())
	}
	for p := range d.granted.Difference(used) {
		if _, ok := notRequested[p]; !ok {
			unused = append(unused, p.String())
		}
	}
	sort.Strings(missing)
	sort.Strings(unused)
	return missing, unused
}

// requestRecorder notes the permission each API request needs, as the API
// server's authorizer sees it.
type requestRecorder struct {
	mu      sync.Mutex
	used    sets.Set[permission]
	resolve *request.RequestInfoFactory
}

func newRequestRecorder() *requestRecorder {
	return &requestRecorder{
		used:    sets.New[permission](),
		resolve: &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")},
	}
}

func (r *requestRecorder) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if info, err := r.resolve.NewRequestInfo(req); err == nil && info.IsResourceRequest {
			res := info.Resource
			if info.Subresource != "" {
				res += "/" + info.Subresource
			}
			r.mu.Lock()
			r.used.Insert(permission{info.APIGroup, res, info.Verb})
			r.mu.Unlock()
		}
		return next.RoundTrip(req)
	})
}

func (r *requestRecorder) snapshot() sets.Set[permission] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used.Clone()
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// expectExactRBAC is the end-of-suite check.
func expectExactRBAC(d *deployedRBAC, used sets.Set[permission]) {
	missing, unused := d.compare(used)
	Expect(map[string][]string{"used but not granted": missing, "granted but never used": unused}).To(
		Equal(map[string][]string{"used but not granted": nil, "granted but never used": nil}),
		"config/default must grant exactly what the operator uses: change controllers/rbac.go or config/rbac")
}
