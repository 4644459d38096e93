package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EnvironmentLabel is on every Runner and names its environment. A claimer
// lists the idle runners of an environment with this label and the field
// selector status.phase=Idle (PhaseField):
//
//	kubectl get rn -l execution.nomadrunner.io/environment=NAME --field-selector status.phase=Idle
//
// The phase is a selectable field rather than a label so that a phase change
// is one status write, and a listing never shows a label that lags the phase.
const EnvironmentLabel = "execution.nomadrunner.io/environment"

// Field selectors Runners support (the CRD's selectableFields).
const (
	PhaseField       = "status.phase"
	EnvironmentField = "spec.environment"
)

// RunnerPhase is where a runner is in its life: Pending → Idle → Claimed → deleted,
// or Failed from any of them.
// +kubebuilder:validation:Enum=Pending;Idle;Claimed;Failed
type RunnerPhase string

const (
	// RunnerPending: the runner's allocation is not running yet (its Nomad job
	// may not be registered yet either; status.nomadJobID is written after it is).
	// A new runner reads as Pending from the start: it is the schema's default.
	RunnerPending RunnerPhase = "Pending"
	// RunnerIdle: the allocation runs and nobody holds the runner; it can be claimed.
	RunnerIdle RunnerPhase = "Idle"
	// RunnerClaimed: a client holds the runner (status.claim says who).
	RunnerClaimed RunnerPhase = "Claimed"
	// RunnerFailed: the allocation failed, restarted or was lost; status.reason says why.
	// A failed runner is never offered again.
	RunnerFailed RunnerPhase = "Failed"
)

// RunnerSpec is fixed when the operator creates the runner.
type RunnerSpec struct {
	// environment is the name of the ExecutionEnvironment, in the same namespace,
	// this runner belongs to. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="environment is immutable"
	Environment string `json:"environment"`

	// templateHash is the environment's status.templateHash this runner's job was
	// rendered from.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	TemplateHash string `json:"templateHash,omitempty"`
}

// RunnerPort is one port of a runner's allocation as Nomad mapped it.
type RunnerPort struct {
	// label is the port's name in the Nomad job's network block.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Label string `json:"label"`

	// hostIP is the address of the host port.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	HostIP string `json:"hostIP,omitempty"`

	// port is the port on the host, what a client connects to.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// to is the port inside the runner that the host port forwards to (0: the same).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	To int32 `json:"to,omitempty"`
}

// RunnerClaim says who holds a runner. A claimer sets it, together with
// phase=Claimed, in one status patch; only lastActivityTime changes after.
// +kubebuilder:validation:XValidation:rule="self.holder == oldSelf.holder",message="holder cannot change once the runner is claimed",fieldPath=".holder"
// +kubebuilder:validation:XValidation:rule="self.token == oldSelf.token",message="token cannot change once the runner is claimed",fieldPath=".token"
// +kubebuilder:validation:XValidation:rule="self.claimedAt == oldSelf.claimedAt",message="claimedAt cannot change once the runner is claimed",fieldPath=".claimedAt"
// +kubebuilder:validation:XValidation:rule="has(self.user) == has(oldSelf.user) && (!has(self.user) || self.user == oldSelf.user)",message="user cannot change once the runner is claimed",fieldPath=".user"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.lastActivityTime) || (has(self.lastActivityTime) && self.lastActivityTime >= oldSelf.lastActivityTime)",message="lastActivityTime only moves forward",fieldPath=".lastActivityTime"
// +kubebuilder:validation:XValidation:rule="self.inactivityTimeoutSeconds == oldSelf.inactivityTimeoutSeconds",message="inactivityTimeoutSeconds cannot change once the runner is claimed",fieldPath=".inactivityTimeoutSeconds"
type RunnerClaim struct {
	// holder names whom the claim is for (a user of the platform, a session, a
	// service): free text the claimer chooses, shown by kubectl. It is not an
	// identity; user is.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Holder string `json:"holder"`

	// user is the Kubernetes user that made the claim, as the API server
	// authenticated it. The admission policies the operator ships set it and
	// refuse any other value; only this user renews and releases the claim
	// (besides the operator and whoever holds the force-release permission).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	User string `json:"user,omitempty"`

	// token is a unique id the claimer chooses for this claim (a UUID), so a
	// restarted client that reuses a holder name never inherits an old claim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Token string `json:"token"`

	// claimedAt is when the claim was made.
	// +required
	ClaimedAt metav1.Time `json:"claimedAt"`

	// inactivityTimeoutSeconds: the operator destroys the runner after this many
	// seconds without a renewal of lastActivityTime. 0 means never; the default
	// is 600, so a claimer that vanishes does not hold a runner forever.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=604800
	InactivityTimeoutSeconds int32 `json:"inactivityTimeoutSeconds"`

	// lastActivityTime is the holder's latest renewal; claimedAt when unset.
	// +optional
	LastActivityTime *metav1.Time `json:"lastActivityTime,omitempty"`
}

// RunnerStatus is what the operator observed of the runner's Nomad job, plus the
// claim a client wrote.
// +kubebuilder:validation:XValidation:rule="!has(self.phase) || self.phase != 'Claimed' || has(self.claim)",message="claim is required when phase is Claimed",fieldPath=".claim",reason="FieldValueRequired"
// +kubebuilder:validation:XValidation:rule="!has(self.claim) || (has(self.phase) && (self.phase == 'Claimed' || self.phase == 'Failed'))",message="phase must be Claimed when claim is set",fieldPath=".phase"
type RunnerStatus struct {
	// phase: Pending, Idle, Claimed or Failed. Claimed and Failed never go back.
	// Pending by default, so a runner shows a phase before its first status write.
	// +optional
	// +kubebuilder:default=Pending
	// +kubebuilder:validation:XValidation:rule="oldSelf != 'Claimed' || self == 'Claimed' || self == 'Failed'",message="a Claimed runner can only become Failed"
	// +kubebuilder:validation:XValidation:rule="oldSelf != 'Failed' || self == 'Failed'",message="a Failed runner stays Failed"
	Phase RunnerPhase `json:"phase,omitempty"`

	// observedGeneration is the metadata.generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// nomadJobID is the ID of this runner's Nomad job, `<environment>-<uuid>`.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	NomadJobID string `json:"nomadJobID,omitempty"`

	// nomadNamespace is the Nomad namespace of the job.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	NomadNamespace string `json:"nomadNamespace,omitempty"`

	// allocationID is the ID of the job's current allocation.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AllocationID string `json:"allocationID,omitempty"`

	// nodeName is the Nomad node the allocation runs on.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	NodeName string `json:"nodeName,omitempty"`

	// address is the host address of the allocation, when it has a network.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Address string `json:"address,omitempty"`

	// ports are the allocation's mapped ports.
	// +optional
	// +listType=map
	// +listMapKey=label
	// +kubebuilder:validation:MaxItems=64
	Ports []RunnerPort `json:"ports,omitempty"`

	// claim is set by the client that holds the runner.
	// +optional
	Claim *RunnerClaim `json:"claim,omitempty"`

	// reason is a CamelCase word for why the runner is in its phase when that
	// needs explaining: OOMKilled, AllocationFailed, AllocationRestarted,
	// NomadJobLost, InactivityTimeout, Unschedulable, ...
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason,omitempty"`

	// message explains reason in a sentence.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`

	// conditions of the runner.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Runner is one prewarmed Nomad job of an ExecutionEnvironment. The operator
// creates it; a client claims it with one status patch (phase Idle→Claimed plus
// claim), uses it, and deletes it to give it back.
//
// The rules on the whole object (not on status) are there because a transition
// rule on status would be skipped on the first status write, when there is no old
// status to compare with: a claim must find the runner Idle in the stored object.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=rn,categories=nomadrunner
// +kubebuilder:subresource:status
// +kubebuilder:selectablefield:JSONPath=`.status.phase`
// +kubebuilder:selectablefield:JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Environment",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Holder",type=string,JSONPath=`.status.claim.holder`
// +kubebuilder:printcolumn:name="User",type=string,priority=1,JSONPath=`.status.claim.user`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Job",type=string,priority=1,JSONPath=`.status.nomadJobID`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.status) || !has(self.status.claim) || (has(oldSelf.status) && has(oldSelf.status.claim)) || (has(oldSelf.status) && has(oldSelf.status.phase) && oldSelf.status.phase == 'Idle')",message="a runner can only be claimed while its status.phase is Idle",fieldPath=".status.claim"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.claim) || (has(self.status) && has(self.status.claim))",message="a claim cannot be removed once set: delete the Runner to release it",fieldPath=".status.claim"
type Runner struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RunnerSpec `json:"spec"`
	// Defaulted when the API server reads the object, so status.phase reads
	// Pending before anyone wrote a status (create cannot set status).
	// +optional
	// +kubebuilder:default={}
	Status RunnerStatus `json:"status,omitempty"`
}

// RunnerList is a list of Runners.
// +kubebuilder:object:root=true
type RunnerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Runner `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Runner{}, &RunnerList{})
}
