package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxPrewarmingPoolSize caps spec.prewarmingPoolSize. One environment holding more
// idle runners than this is almost always a typo; split such a pool into several
// environments instead.
const MaxPrewarmingPoolSize = 1000

// MinMemoryLimitMB is Nomad's own floor for a task's memory, in MB.
const MinMemoryLimitMB = 10

// ExecutionEnvironmentSpec declares a pool of prewarmed runners: what each runner
// runs (image, resources, network, Nomad job template) and how many idle ones to keep.
// +kubebuilder:validation:XValidation:rule="!has(self.exposedPorts) || size(self.exposedPorts) == 0 || self.networkAccess",message="exposedPorts can only be set when networkAccess is true",fieldPath=".exposedPorts",reason="FieldValueForbidden"
type ExecutionEnvironmentSpec struct {
	// image is the container image every runner of this environment runs
	// (for the docker driver, a reference such as "python:3.13-slim").
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`

	// prewarmingPoolSize is the number of idle runners to keep ready to be claimed.
	// Claimed runners do not count. It is the scale subresource, so
	// `kubectl scale ee/NAME --replicas=N`, an HPA or KEDA can drive it. Defaults to 0.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	PrewarmingPoolSize int32 `json:"prewarmingPoolSize"`

	// maxRunners caps the runners of this environment that exist at once: idle,
	// pending and claimed (a claimed runner that failed counts until it is
	// released). Each is a Nomad job, so it bounds what one environment's
	// claimers can take from Nomad. When claims reach it, the pool stops
	// refilling (PoolFilled=False, reason RunnerLimitReached) until runners
	// are released. Unset means prewarmingPoolSize + 100.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxRunners *int32 `json:"maxRunners,omitempty"`

	// cpuLimit is the CPU each runner reserves, in MHz (Nomad's `cpu`). Defaults to 100.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	CPULimit int32 `json:"cpuLimit,omitempty"`

	// memoryLimit is the hard memory ceiling of each runner, in MB (Nomad's
	// `memory_max`); at least 10, Nomad's minimum. Defaults to 128.
	// +optional
	// +kubebuilder:default=128
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=1048576
	MemoryLimit int32 `json:"memoryLimit,omitempty"`

	// networkAccess gives runners a network. Without it (the default) runners get
	// none (`network_mode = "none"`), which is what untrusted code should have.
	// +optional
	// +kubebuilder:default=false
	NetworkAccess bool `json:"networkAccess"`

	// exposedPorts are the container ports mapped to host ports on each runner;
	// each 1 to 65535, no duplicates. Only allowed when networkAccess is true.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	ExposedPorts []int32 `json:"exposedPorts,omitempty"`

	// templateJob is a Nomad job, in HCL or JSON, that every runner is made from.
	// Empty means the operator's default template (docker driver, keep-alive task).
	// HCL is parsed by Nomad itself. Image, CPU, memory and network always come
	// from this spec, whatever the template says.
	// +optional
	// +kubebuilder:validation:MaxLength=131072
	TemplateJob string `json:"templateJob,omitempty"`

	// nomad overrides where the runners' jobs are placed in Nomad.
	// +optional
	Nomad *NomadPlacement `json:"nomad,omitempty"`
}

// DefaultClaimHeadroom is how many runners beyond prewarmingPoolSize an
// environment may have when spec.maxRunners is unset.
const DefaultClaimHeadroom = 100

// RunnerLimit is the most runners the environment may have at once:
// spec.maxRunners, or prewarmingPoolSize + DefaultClaimHeadroom when unset.
func (ee *ExecutionEnvironment) RunnerLimit() int {
	if ee.Spec.MaxRunners != nil {
		return int(*ee.Spec.MaxRunners)
	}
	return int(ee.Spec.PrewarmingPoolSize) + DefaultClaimHeadroom
}

// NomadPlacement overrides the Nomad namespace, region, datacenters and node pool
// of an environment's runner jobs. Unset fields keep the template's or the
// operator's defaults.
type NomadPlacement struct {
	// namespace is the Nomad namespace of the runner jobs.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9-]+$`
	Namespace string `json:"namespace,omitempty"`

	// region is the Nomad region of the runner jobs.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Region string `json:"region,omitempty"`

	// datacenters the runner jobs may be placed in (Nomad accepts globs such as "dc*").
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	Datacenters []string `json:"datacenters,omitempty"`

	// nodePool is the Nomad node pool of the runner jobs.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	NodePool string `json:"nodePool,omitempty"`
}

// ExecutionEnvironmentStatus is what the operator last observed of the pool.
type ExecutionEnvironmentStatus struct {
	// observedGeneration is the metadata.generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, TemplateValid, PoolFilled and NomadReachable.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// idleRunners counts runners whose allocation is running and that nobody holds.
	// +optional
	// +kubebuilder:default=0
	IdleRunners int32 `json:"idleRunners"`

	// claimedRunners counts runners held by a client.
	// +optional
	// +kubebuilder:default=0
	ClaimedRunners int32 `json:"claimedRunners"`

	// pendingRunners counts runners whose job is registered but not running yet.
	// +optional
	// +kubebuilder:default=0
	PendingRunners int32 `json:"pendingRunners"`

	// failedRunners counts runners whose allocation failed or whose job was lost.
	// +optional
	// +kubebuilder:default=0
	FailedRunners int32 `json:"failedRunners"`

	// selector is the label selector of this environment's runners, in string
	// form; the scale subresource reports it (HPA and KEDA need it).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Selector string `json:"selector,omitempty"`

	// templateHash identifies the rendered runner job of the current spec; runners
	// with another hash are stale and get replaced while idle.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	TemplateHash string `json:"templateHash,omitempty"`
}

// ExecutionEnvironment is a pool of prewarmed runners on Nomad, all made from one
// job template. The operator keeps spec.prewarmingPoolSize idle runners ready.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ee,categories=nomadrunner
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.prewarmingPoolSize,statuspath=.status.idleRunners,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`
// +kubebuilder:printcolumn:name="Pool",type=integer,JSONPath=`.spec.prewarmingPoolSize`
// +kubebuilder:printcolumn:name="Idle",type=integer,JSONPath=`.status.idleRunners`
// +kubebuilder:printcolumn:name="Claimed",type=integer,JSONPath=`.status.claimedRunners`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it is the value of every runner's environment label"
type ExecutionEnvironment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ExecutionEnvironmentSpec `json:"spec"`
	// +optional
	Status ExecutionEnvironmentStatus `json:"status,omitempty"`
}

// ExecutionEnvironmentList is a list of ExecutionEnvironments.
// +kubebuilder:object:root=true
type ExecutionEnvironmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExecutionEnvironment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ExecutionEnvironment{}, &ExecutionEnvironmentList{})
}
