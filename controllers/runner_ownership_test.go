package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func TestNotMadeByUs(t *testing.T) {
	env := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "python", Namespace: "ns", UID: "u1"}}
	other := &v1alpha1.ExecutionEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "java", Namespace: "ns", UID: "u2"}}
	controlledBy := func(ee *v1alpha1.ExecutionEnvironment) []metav1.OwnerReference {
		return []metav1.OwnerReference{*metav1.NewControllerRef(ee, v1alpha1.GroupVersion.WithKind("ExecutionEnvironment"))}
	}
	ownedNotControlled := controlledBy(env)
	ownedNotControlled[0].Controller = nil
	ours := "python-" + "0b7e2c1a-4c5e-4f8e-9d35-0f6e3a1b2c3d"
	cases := []struct {
		name   string
		owners []metav1.OwnerReference
		jobID  string
		want   string // substring of the reason; "" means ours
	}{
		{"made by the environment controller", controlledBy(env), ours, ""},
		{"no owner", nil, ours, "not controlled by ExecutionEnvironment python"},
		{"owner without controller flag", ownedNotControlled, ours, "not controlled"},
		{"controlled by another environment", controlledBy(other), ours, "not controlled"},
		{"foreign job ID", controlledBy(env), "payments-api", `Nomad job ID "payments-api"`},
		{"job ID of another environment", controlledBy(env), "java-0b7e2c1a-4c5e-4f8e-9d35-0f6e3a1b2c3d", "not one the operator makes"},
		{"no job ID", controlledBy(env), "", `Nomad job ID ""`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rn := &v1alpha1.Runner{
				ObjectMeta: metav1.ObjectMeta{Name: "python-x", Namespace: "ns", OwnerReferences: c.owners,
					Annotations: map[string]string{v1alpha1.JobIDAnnotation: c.jobID}},
				Spec: v1alpha1.RunnerSpec{Environment: "python"},
			}
			got := notMadeByUs(rn)
			if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
				t.Fatalf("notMadeByUs = %q, want %q", got, c.want)
			}
		})
	}
}
