package controllers

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func TestResolveInstance(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	const uid = "0c5e1a2b-7f3d-4c8e-9b1a-2d3e4f5a6b7c"
	kubeSystem := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", UID: types.UID(uid)}}
	withCluster := fake.NewClientBuilder().WithScheme(scheme).WithObjects(kubeSystem).Build()
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()

	for _, tc := range []struct {
		name       string
		reader     client.Reader
		explicit   string
		namespace  string
		want       string
		wantErrHas string
	}{
		{name: "an explicit instance wins, nothing is read", reader: empty, explicit: "prod", namespace: "nomad-runner-system", want: "prod"},
		{name: "derived from the namespace and kube-system's UID", reader: withCluster, namespace: "nomad-runner-system",
			want: nomadbridge.DefaultInstance("nomad-runner-system", uid)},
		{name: "outside a cluster", reader: withCluster, want: nomadbridge.DefaultInstance("", uid)},
		{name: "kube-system cannot be read", reader: empty, namespace: "nomad-runner-system", wantErrHas: "set --operator-instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveInstance(context.Background(), tc.reader, tc.explicit, tc.namespace)
			if tc.wantErrHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
					t.Fatalf("ResolveInstance = %q, %v; want an error saying %q", got, err, tc.wantErrHas)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ResolveInstance = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestOperatorNamespaceFromDownwardAPI(t *testing.T) {
	t.Setenv("POD_NAMESPACE", " nomad-runner-system\n")
	if got := OperatorNamespace(); got != "nomad-runner-system" {
		t.Errorf("OperatorNamespace() = %q, want $POD_NAMESPACE", got)
	}
}
