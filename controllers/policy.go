package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// BuiltinPolicyName names the policy of environments no EnvironmentPolicy selects.
const BuiltinPolicyName = "built-in default"

// JobPolicy fills in the defaults of an EnvironmentPolicy's spec. The operator's
// default Nomad namespace is the only one allowed when the spec lists none.
func JobPolicy(name string, spec v1alpha1.EnvironmentPolicySpec, operatorNamespace string) nomadbridge.JobPolicy {
	orDefault := func(v *int32, d int) int {
		if v == nil {
			return d
		}
		return int(*v)
	}
	orList := func(v, d []string) []string {
		if len(v) == 0 {
			return slices.Clone(d)
		}
		return slices.Clone(v)
	}
	p := nomadbridge.JobPolicy{
		Name:              name,
		Drivers:           orList(spec.Drivers, v1alpha1.DefaultPolicyDrivers),
		UnisolatedDrivers: slices.Clone(spec.UnisolatedDrivers),
		Capabilities:      slices.Clone(spec.Capabilities),
		Images:            slices.Clone(spec.Images),
		MaxPriority:       orDefault(spec.MaxPriority, v1alpha1.DefaultPolicyMaxPriority),
		MaxCPU:            orDefault(spec.Resources.MaxCPU, v1alpha1.DefaultPolicyMaxCPU),
		MaxMemoryMB:       orDefault(spec.Resources.MaxMemoryMB, v1alpha1.DefaultPolicyMaxMemoryMB),
		MaxDiskMB:         orDefault(spec.Resources.MaxDiskMB, v1alpha1.DefaultPolicyMaxDiskMB),
		MaxPids:           orDefault(spec.Resources.MaxPids, v1alpha1.DefaultPolicyMaxPids),
		Namespaces:        orList(spec.Nomad.Namespaces, []string{operatorNamespace}),
		NodePools:         slices.Clone(spec.Nomad.NodePools),
		Datacenters:       orList(spec.Nomad.Datacenters, []string{"*"}),
	}
	for _, a := range spec.Allow {
		p.Allow = append(p.Allow, string(a))
	}
	return p
}

// Policies finds the EnvironmentPolicies that govern a Kubernetes namespace.
type Policies struct {
	// Reader reads EnvironmentPolicies and Namespaces (the manager's cache).
	Reader client.Reader
}

// For returns the policies of the environments of a namespace: every
// EnvironmentPolicy whose selector matches the namespace's labels, sorted by
// name, or the built-in default when none does.
func (p *Policies) For(ctx context.Context, namespace, operatorNamespace string) ([]nomadbridge.JobPolicy, error) {
	builtin := []nomadbridge.JobPolicy{JobPolicy(BuiltinPolicyName, v1alpha1.EnvironmentPolicySpec{}, operatorNamespace)}
	if p == nil || p.Reader == nil {
		return builtin, nil
	}
	list := &v1alpha1.EnvironmentPolicyList{}
	if err := p.Reader.List(ctx, list); err != nil {
		return nil, fmt.Errorf("list environment policies: %w", err)
	}
	if len(list.Items) == 0 {
		return builtin, nil
	}
	ns := &corev1.Namespace{}
	if err := p.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return nil, fmt.Errorf("read namespace %s for its environment policies: %w", namespace, err)
	}
	var out []nomadbridge.JobPolicy
	for _, pol := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.NamespaceSelector)
		if err != nil {
			// Whether a broken selector means this namespace is unknowable:
			// refuse rather than guess.
			return nil, &nomadbridge.PolicyError{Policy: pol.Name, Violations: []nomadbridge.Violation{{
				Path: "spec.namespaceSelector", Reason: err.Error(), Rule: "namespaceSelector",
			}}}
		}
		if sel.Matches(labels.Set(ns.Labels)) {
			out = append(out, JobPolicy(pol.Name, pol.Spec, operatorNamespace))
		}
	}
	if len(out) == 0 {
		return builtin, nil
	}
	slices.SortFunc(out, func(a, b nomadbridge.JobPolicy) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
