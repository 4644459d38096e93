package controlplane

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	executionv1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// RawExecPolicyName names the EnvironmentPolicy that lets environments use
// raw_exec, the only driver a Nomad dev agent here runs.
const RawExecPolicyName = "local-raw-exec"

// OwnPolicyLabel on a namespace leaves it out of the raw_exec policy, so a
// test can hold its environments to policies of its own, or to the built-in default.
const OwnPolicyLabel = "nomadrunner.io/own-policy"

// RawExecPolicy is the EnvironmentPolicy of the local quickstart and the test
// suites: raw_exec allowed (it runs code as the Nomad agent's user, with the
// agent's network), in every namespace without OwnPolicyLabel.
func RawExecPolicy() *executionv1alpha1.EnvironmentPolicy {
	return &executionv1alpha1.EnvironmentPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: RawExecPolicyName},
		Spec: executionv1alpha1.EnvironmentPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: OwnPolicyLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
			}},
			Drivers:           []string{"raw_exec"},
			UnisolatedDrivers: []string{"raw_exec"},
		},
	}
}

// AllowRawExec opts a control plane into raw_exec runners: it creates
// RawExecPolicy (keeping one that exists).
func AllowRawExec(ctx context.Context, c client.Client) error {
	if err := c.Create(ctx, RawExecPolicy()); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create environment policy %s: %w", RawExecPolicyName, err)
	}
	return nil
}
