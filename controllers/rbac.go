// Package controllers holds one reconciler per kind of the operator
// (ExecutionEnvironment, Runner) and the wiring of Nomad's event stream into
// controller-runtime.
package controllers

// The permissions the controllers use; controller-gen renders them into
// config/rbac/role.yaml (make manifests).
//
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/finalizers,verbs=update
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
