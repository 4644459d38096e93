package controllers

import (
	"context"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// ClusterIdentityNamespace is the namespace whose UID identifies a cluster: it
// exists in every cluster, is made once when the cluster is, and is never
// deleted.
const ClusterIdentityNamespace = "kube-system"

// serviceAccountNamespaceFile is where a pod finds its own namespace.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// OperatorNamespace returns the namespace the operator runs in: $POD_NAMESPACE
// (config/manager sets it through the downward API), else the namespace file of
// the pod's service account, else "" (outside a cluster).
func OperatorNamespace() string {
	if ns := strings.TrimSpace(os.Getenv("POD_NAMESPACE")); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

// ResolveInstance returns the operator instance: explicit when it is set,
// else nomadbridge.DefaultInstance of namespace and the UID of the cluster's
// kube-system namespace, read through reader. At start the manager's cache does
// not run yet: pass its API reader.
func ResolveInstance(ctx context.Context, reader client.Reader, explicit, namespace string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	ns := &corev1.Namespace{}
	if err := reader.Get(ctx, client.ObjectKey{Name: ClusterIdentityNamespace}, ns); err != nil {
		return "", fmt.Errorf("read namespace %s to name this installation (grant get on it, or set --operator-instance): %w",
			ClusterIdentityNamespace, err)
	}
	if ns.UID == "" {
		return "", fmt.Errorf("namespace %s has no UID to name this installation by (set --operator-instance)", ClusterIdentityNamespace)
	}
	return nomadbridge.DefaultInstance(namespace, string(ns.UID)), nil
}
