// Package controllers holds one reconciler per kind of the operator
// (ExecutionEnvironment, Runner) and the wiring of Nomad's event stream into
// controller-runtime.
package controllers

// The permissions the controllers use; controller-gen renders them into
// config/rbac/role.yaml (make manifests). The controllers suite runs the
// operator with exactly the RBAC of config/default and fails if a permission is
// missing or never used (controllers/rbac_integration_test.go).
//
// `operate` on runners is no HTTP verb: the admission policies of
// config/policy ask the authorizer for it to tell the operator from everyone
// else, so the operator's identity is whoever the installation binds this
// role to, never a name written into a rule.
//
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments,verbs=list;watch;patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/status,verbs=patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=executionenvironments/finalizers,verbs=update
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners,verbs=get;list;watch;create;patch;delete;operate
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=runners/status,verbs=patch
// +kubebuilder:rbac:groups=execution.nomadrunner.io,resources=environmentpolicies,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// The kube-system namespace is read once at start: its UID names the
// installation when --operator-instance is not set (see ResolveInstance).
//
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get,resourceNames=kube-system
