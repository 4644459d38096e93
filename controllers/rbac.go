// Package controllers holds one reconciler per kind of the operator
// (ExecutionEnvironment, Runner) and the wiring of Nomad's event stream into
// controller-runtime.
package controllers

// The permissions the controllers use; controller-gen renders them into
// config/rbac/role.yaml (make manifests). The controllers suite runs the
// operator with exactly the RBAC of config/default and fails if a permission is
// missing or never used (controllers/rbac_integration_test.go).
//
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments,verbs=list;watch;patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/status,verbs=patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/finalizers,verbs=update
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
