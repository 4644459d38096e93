package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of an EnvironmentPolicy, and of the built-in policy that governs
// environments no EnvironmentPolicy selects.
const (
	DefaultPolicyMaxPriority = 50
	DefaultPolicyMaxCPU      = 4000 // MHz
	DefaultPolicyMaxMemoryMB = 8192
	DefaultPolicyMaxDiskMB   = 1024
	DefaultPolicyMaxPids     = 1024
)

// DefaultPolicyDrivers are the task drivers an environment may use unless a
// policy says otherwise: container drivers, whose tasks Nomad isolates from the
// host (their own filesystem, process and network namespaces).
var DefaultPolicyDrivers = []string{"docker", "podman"}

// PolicyPermission is one opt-out of the secure default: a feature of Nomad
// jobs that reaches beyond the runner's own sandbox.
// +kubebuilder:validation:Enum=Privileged;HostNamespaces;HostVolumes;CSIVolumes;Devices;Templates;Artifacts;Vault;Consul;Services;WorkloadIdentity
type PolicyPermission string

const (
	// PermitPrivileged allows privileged containers, security_opt, sysctl and
	// CSI plugin tasks: the task can take over the node.
	PermitPrivileged PolicyPermission = "Privileged"
	// PermitHostNamespaces allows a task to share the node's or another
	// container's network, PID, IPC, UTS, user or cgroup namespace.
	PermitHostNamespaces PolicyPermission = "HostNamespaces"
	// PermitHostVolumes allows host volumes, bind mounts and the docker
	// volumes/mount options: files of the node inside the runner.
	PermitHostVolumes PolicyPermission = "HostVolumes"
	// PermitCSIVolumes allows CSI volume requests.
	PermitCSIVolumes PolicyPermission = "CSIVolumes"
	// PermitDevices allows host devices and device requests (GPUs).
	PermitDevices PolicyPermission = "Devices"
	// PermitTemplates allows template blocks, which can read Nomad Variables,
	// Consul and Vault data with the job's identity.
	PermitTemplates PolicyPermission = "Templates"
	// PermitArtifacts allows artifact blocks: the node downloads from anywhere.
	PermitArtifacts PolicyPermission = "Artifacts"
	// PermitVault allows vault blocks (Vault tokens in the runner).
	PermitVault PolicyPermission = "Vault"
	// PermitConsul allows consul blocks and Consul Connect.
	PermitConsul PolicyPermission = "Consul"
	// PermitServices allows service registrations (Nomad or Consul catalog).
	PermitServices PolicyPermission = "Services"
	// PermitWorkloadIdentity allows identity blocks: tokens for Nomad's API,
	// Consul or Vault inside the runner.
	PermitWorkloadIdentity PolicyPermission = "WorkloadIdentity"
)

// EnvironmentPolicySpec is what ExecutionEnvironments of the selected
// Kubernetes namespaces may ask of Nomad. Every field's zero value is the
// secure default; each opt-out is named explicitly.
type EnvironmentPolicySpec struct {
	// namespaceSelector selects the Kubernetes namespaces whose
	// ExecutionEnvironments this policy governs (match a namespace by name with
	// the label kubernetes.io/metadata.name). Empty selects every namespace.
	// An environment must pass every policy that selects its namespace; one
	// that no policy selects is held to the built-in default (every field
	// below at its default).
	// +optional
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// drivers are the Nomad task drivers a runner's tasks may use. Defaults to
	// docker and podman. raw_exec runs code as the Nomad agent's user on the
	// node itself: allow it only where the runners' users are trusted (the
	// local quickstart and the test suites do).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	Drivers []string `json:"drivers,omitempty"`

	// unisolatedDrivers are drivers allowed in environments without
	// networkAccess even though the operator cannot cut their network: a task
	// of any other driver outside docker and podman needs its group to set
	// `network { mode = "none" }`. Empty by default.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	UnisolatedDrivers []string `json:"unisolatedDrivers,omitempty"`

	// allow lists the features of Nomad jobs, refused by default, that this
	// policy permits.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Allow []PolicyPermission `json:"allow,omitempty"`

	// images are the container images runners may run: each entry is a
	// prefix of the image reference (e.g. "registry.example.com/courses/", or a
	// whole reference). It applies to the environment's image and to every
	// container task of its template. Empty allows any image.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	Images []string `json:"images,omitempty"`

	// capabilities are the Linux capabilities a task may add (`cap_add`), in
	// upper case without the CAP_ prefix (e.g. NET_BIND_SERVICE). Empty by default.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	Capabilities []string `json:"capabilities,omitempty"`

	// maxPriority bounds a runner job's Nomad priority (1-100), so runners never
	// preempt or queue ahead of the platform's own jobs. Defaults to 50, Nomad's default.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxPriority *int32 `json:"maxPriority,omitempty"`

	// resources bounds what one runner may take from a node.
	// +optional
	Resources PolicyResources `json:"resources,omitempty"`

	// nomad lists where in Nomad runners may be placed.
	// +optional
	Nomad PolicyPlacement `json:"nomad,omitempty"`
}

// PolicyResources bounds one runner. All its tasks (sidecars too) share the
// environment's cpuLimit and memoryLimit; these bound those limits.
type PolicyResources struct {
	// maxCPU bounds an environment's cpuLimit, in MHz. Defaults to 4000.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxCPU *int32 `json:"maxCPU,omitempty"`
	// maxMemoryMB bounds an environment's memoryLimit, in MB. Defaults to 8192.
	// +optional
	// +kubebuilder:validation:Minimum=10
	MaxMemoryMB *int32 `json:"maxMemoryMB,omitempty"`
	// maxDiskMB bounds a runner's ephemeral disk, in MB. Defaults to 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxDiskMB *int32 `json:"maxDiskMB,omitempty"`
	// maxPids bounds the processes of a docker task (`pids_limit`, which the
	// operator sets to this value when the template leaves it unset), so a
	// fork bomb stays in its runner. Defaults to 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxPids *int32 `json:"maxPids,omitempty"`
}

// PolicyPlacement lists where runners may go. An environment's spec.nomad (or
// its template, where the spec leaves a field unset) picks among these.
type PolicyPlacement struct {
	// namespaces are the Nomad namespaces runners may be registered in.
	// Defaults to the operator's default Nomad namespace only.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	Namespaces []string `json:"namespaces,omitempty"`
	// nodePools are the Nomad node pools runners may ask for. Defaults to none:
	// runners go to the default node pool of their Nomad namespace.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	NodePools []string `json:"nodePools,omitempty"`
	// datacenters are the Nomad datacenters runners may ask for; "*" allows
	// any. Defaults to ["*"].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	Datacenters []string `json:"datacenters,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=envpol,categories=nomadrunner
// +kubebuilder:printcolumn:name="Drivers",type=string,JSONPath=`.spec.drivers`
// +kubebuilder:printcolumn:name="Allow",type=string,JSONPath=`.spec.allow`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// EnvironmentPolicy is the platform administrator's word on what the
// ExecutionEnvironments of some Kubernetes namespaces may get from Nomad. It
// is cluster-scoped: only who may write cluster-scoped objects of this group
// (cluster administrators; no role the operator ships grants it) changes it.
// The operator checks every environment's rendered runner job against it
// before registering anything.
type EnvironmentPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec EnvironmentPolicySpec `json:"spec,omitempty"`
}

// +kubebuilder:object:root=true

// EnvironmentPolicyList is a list of EnvironmentPolicies.
type EnvironmentPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EnvironmentPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EnvironmentPolicy{}, &EnvironmentPolicyList{})
}
