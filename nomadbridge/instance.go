package nomadbridge

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// LocalNamespace stands for the operator's namespace when it runs outside a
// cluster and nothing names one (no POD_NAMESPACE, no service account files).
const LocalNamespace = "local"

// maxInstanceNamespace caps the namespace part of a default instance: a
// Kubernetes namespace is at most 63 characters, and so is this part, so that a
// default instance stays a short, DNS-label-like meta value.
const maxInstanceNamespace = 63

// DefaultInstance names an operator installation when --operator-instance is
// not set: <namespace>-<first 10 hex digits of sha256(clusterUID)>, where
// clusterUID is the UID of the cluster's kube-system namespace (fixed for the
// cluster's life, and different in every cluster) and namespace is the one the
// operator runs in. Two installations on one Nomad (staging and prod, or two
// installations in one cluster) so get different instances, and each only
// ever touches its own jobs; one installation keeps its instance across
// restarts, upgrades and replicas.
//
// The namespace part keeps only lower-case letters, digits and dashes (a
// namespace has no others; this guards a hand-set POD_NAMESPACE), capped at 63
// characters; an empty one is LocalNamespace. Only a hash of the UID is
// written into Nomad: job meta is visible to everyone who can read jobs there.
func DefaultInstance(namespace, clusterUID string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(namespace) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		}
	}
	ns := strings.Trim(b.String(), "-")
	if len(ns) > maxInstanceNamespace {
		ns = strings.TrimRight(ns[:maxInstanceNamespace], "-")
	}
	if ns == "" {
		ns = LocalNamespace
	}
	sum := sha256.Sum256([]byte(clusterUID))
	return ns + "-" + hex.EncodeToString(sum[:])[:10]
}
