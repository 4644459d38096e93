package nomadbridge_test

import (
	"strings"
	"testing"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func TestDefaultInstance(t *testing.T) {
	const (
		staging = "0c5e1a2b-7f3d-4c8e-9b1a-2d3e4f5a6b7c" // sha256 starts 40a9d0f4bd
		prod    = "8a1f0d44-2b9e-4f6a-b3c1-5e7d9f0a1b2c" // sha256 starts 085518b3bc
	)
	for _, tc := range []struct {
		name, namespace, uid, want string
	}{
		{"config/default's namespace", "nomad-runner-system", staging, "nomad-runner-system-40a9d0f4bd"},
		{"same namespace, another cluster", "nomad-runner-system", prod, "nomad-runner-system-085518b3bc"},
		{"another namespace, same cluster", "runners-b", staging, "runners-b-40a9d0f4bd"},
		{"outside a cluster, no namespace known", "", staging, "local-40a9d0f4bd"},
		{"a hand-set namespace is cleaned", " Team_A/Runners ", staging, "teamarunners-40a9d0f4bd"},
		{"nothing usable in it", "__", staging, "local-40a9d0f4bd"},
		{"dashes at the ends are dropped", "-ns-", staging, "ns-40a9d0f4bd"},
		{"capped at 63 characters", strings.Repeat("n", 70), staging, strings.Repeat("n", 63) + "-40a9d0f4bd"},
		{"cut where it leaves a dash", strings.Repeat("n", 62) + "-x", staging, strings.Repeat("n", 62) + "-40a9d0f4bd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nomadbridge.DefaultInstance(tc.namespace, tc.uid)
			if got != tc.want {
				t.Errorf("DefaultInstance(%q, %q) = %q, want %q", tc.namespace, tc.uid, got, tc.want)
			}
			if strings.Contains(got, tc.uid) {
				t.Errorf("DefaultInstance(%q, %q) = %q shows the cluster's UID", tc.namespace, tc.uid, got)
			}
		})
	}
}
