// Package v1alpha1 holds the API of nomad-runner-operator: ExecutionEnvironment,
// a declared pool of prewarmed runners, and Runner, one Nomad job of such a pool
// that a client claims with a single status patch.
//
// +kubebuilder:object:generate=true
// +groupName=execution.nomadrunner.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "execution.nomadrunner.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
