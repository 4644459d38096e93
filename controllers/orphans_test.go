package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func TestOrphaned(t *testing.T) {
	job := func(uid string) nomadbridge.JobRef {
		return nomadbridge.JobRef{Namespace: "default", ID: "python-1", Meta: nomadbridge.RunnerMeta{Namespace: "ns", Runner: "python-a", UID: uid}}
	}
	runner := func(uid types.UID, jobID string) *v1alpha1.Runner {
		rn := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "python-a", UID: uid}}
		if jobID != "" {
			rn.Annotations = map[string]string{v1alpha1.JobIDAnnotation: jobID}
		}
		return rn
	}
	for _, tc := range []struct {
		name   string
		job    nomadbridge.JobRef
		runner *v1alpha1.Runner
		want   bool
	}{
		{"its runner is gone", job("uid-1"), nil, true},
		{"its runner names it and is the object the job records", job("uid-1"), runner("uid-1", "python-1"), false},
		{"a job that records no runner UID, its runner naming it", job(""), runner("uid-1", "python-1"), false},
		{"a runner recreated under the same name", job("uid-1"), runner("uid-2", "python-1"), true},
		{"its runner names another job", job("uid-1"), runner("uid-1", "python-2"), true},
		{"its runner names no job", job("uid-1"), runner("uid-1", ""), true},
		{"a job that records no runner UID, its runner naming another job", job(""), runner("uid-1", "python-2"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := orphaned(tc.job, tc.runner); got != tc.want {
				t.Errorf("orphaned = %v, want %v", got, tc.want)
			}
		})
	}
}
