package nomadbridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// ErrPolicyViolation marks a runner job that asks Nomad for more than the
// platform's policy allows: only a change of the environment or the policy
// fixes it.
var ErrPolicyViolation = errors.New("runner job violates the environment policy")

// Permission names a job feature that a JobPolicy refuses unless it allows it
// (the same names as the EnvironmentPolicy API's allow list).
const (
	PermitPrivileged       = "Privileged"
	PermitHostNamespaces   = "HostNamespaces"
	PermitHostVolumes      = "HostVolumes"
	PermitCSIVolumes       = "CSIVolumes"
	PermitDevices          = "Devices"
	PermitTemplates        = "Templates"
	PermitArtifacts        = "Artifacts"
	PermitVault            = "Vault"
	PermitConsul           = "Consul"
	PermitServices         = "Services"
	PermitWorkloadIdentity = "WorkloadIdentity"
)

// JobPolicy is what a runner job may ask of Nomad: an EnvironmentPolicy with
// its defaults filled in, kept free of Kubernetes types so that checking a job
// is a pure function.
type JobPolicy struct {
	// Name names the policy in violations ("built-in default" for the default).
	Name              string
	Drivers           []string
	UnisolatedDrivers []string
	Allow             []string
	Capabilities      []string
	Images            []string // prefixes; empty allows any
	MaxPriority       int
	MaxCPU            int // MHz, bounds the environment's cpuLimit
	MaxMemoryMB       int // bounds the environment's memoryLimit
	MaxDiskMB         int
	MaxPids           int
	Namespaces        []string // "" stands for the operator's default namespace
	NodePools         []string
	Datacenters       []string
}

// Violation is one thing a job asks for that a policy refuses.
type Violation struct {
	// Path locates it in the job, the way Nomad names it:
	// `group "g" task "t" config.privileged`.
	Path string
	// Reason says what is refused.
	Reason string
	// Rule is the policy field that would allow it, e.g. "allow: Privileged".
	Rule string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: %s (policy %s)", v.Path, v.Reason, v.Rule)
}

// PolicyError is the error of a job that violates a policy. It wraps
// ErrPolicyViolation and lists every violation.
type PolicyError struct {
	Policy     string
	Violations []Violation
}

func (e *PolicyError) Error() string {
	parts := make([]string, 0, len(e.Violations))
	for _, v := range e.Violations {
		parts = append(parts, v.String())
	}
	return fmt.Sprintf("environment policy %q refuses the runner job: %s", e.Policy, strings.Join(parts, "; "))
}

func (e *PolicyError) Unwrap() error { return ErrPolicyViolation }

// CheckJobPolicies checks a rendered environment job (RenderEnvironmentJob's)
// against every policy that governs the environment; the job must pass them
// all. It returns nil or a *PolicyError of the first policy refusing it.
func CheckJobPolicies(job *nomad.Job, spec EnvironmentSpec, policies []JobPolicy) error {
	for _, p := range policies {
		if vs := CheckJob(job, spec, p); len(vs) > 0 {
			return &PolicyError{Policy: p.Name, Violations: vs}
		}
	}
	return nil
}

// containerDrivers isolate a task's network themselves (network_mode).
var containerDrivers = []string{"docker", "podman"}

// groupIsolatingDrivers run their tasks in the group's network namespace, so a
// group `network { mode = "none" }` cuts them off.
var groupIsolatingDrivers = []string{"exec", "raw_exec", "java"}

// modeKeys are the namespace-sharing options of container and exec drivers,
// with the values that keep a task in namespaces of its own.
var modeKeys = map[string][]string{
	"network_mode": {"", "none", "bridge", "default"},
	"pid_mode":     {"", "private"},
	"ipc_mode":     {"", "private", "none", "shareable"},
	"uts_mode":     {"", "private"},
	"userns_mode":  {"", "private"},
	"cgroupns":     {"", "private"},
}

// privilegedKeys are task config options that give a task power over the
// node or a way around its sandbox: another container runtime (runc instead
// of the gVisor the node defaults to), or a docker logging driver that ships
// the task's output wherever the template says, past network_mode none.
var privilegedKeys = []string{"security_opt", "sysctl", "cgroup_v1_override", "cgroup_v2_override", "device_cgroup_rules", "runtime", "logging"}

// mountKeys are task config options that bring node files into a task.
var mountKeys = []string{"volumes", "mount", "mounts", "volume_driver"}

// CheckJob lists what a rendered environment job asks for beyond policy p.
// spec is the environment's (its limits and network), so the check sees the
// job a runner really gets.
func CheckJob(job *nomad.Job, spec EnvironmentSpec, p JobPolicy) []Violation {
	c := checker{p: p}
	c.job(job, spec)
	return c.out
}

type checker struct {
	p   JobPolicy
	out []Violation
}

func (c *checker) refuse(path, reason, rule string) {
	c.out = append(c.out, Violation{Path: path, Reason: reason, Rule: rule})
}

func (c *checker) allowed(perm string) bool { return slices.Contains(c.p.Allow, perm) }

// need refuses what is present unless perm is allowed.
func (c *checker) need(present bool, perm, path, what string) {
	if present && !c.allowed(perm) {
		c.refuse(path, what+" is not allowed", "allow: "+perm)
	}
}

func (c *checker) job(job *nomad.Job, spec EnvironmentSpec) {
	if prio := derefInt(job.Priority); c.p.MaxPriority > 0 && prio > c.p.MaxPriority {
		c.refuse("job priority", fmt.Sprintf("%d is above %d", prio, c.p.MaxPriority), "maxPriority")
	}
	if ns := deref(job.Namespace); !slices.Contains(c.p.Namespaces, ns) {
		c.refuse("job namespace", fmt.Sprintf("Nomad namespace %s is not allowed", quoteOrDefault(ns)), "nomad.namespaces")
	}
	if pool := deref(job.NodePool); pool != "" && !slices.Contains(c.p.NodePools, pool) {
		c.refuse("job node_pool", fmt.Sprintf("node pool %q is not allowed", pool), "nomad.nodePools")
	}
	if !slices.Contains(c.p.Datacenters, "*") {
		for _, dc := range job.Datacenters {
			if !slices.Contains(c.p.Datacenters, dc) {
				c.refuse("job datacenters", fmt.Sprintf("datacenter %q is not allowed", dc), "nomad.datacenters")
			}
		}
	}
	if job.Multiregion != nil {
		c.refuse("job multiregion", "multiregion jobs are not allowed", "regions")
	}
	if c.p.MaxCPU > 0 && spec.CPU > c.p.MaxCPU {
		c.refuse("spec.cpuLimit", fmt.Sprintf("%d MHz is above %d MHz", spec.CPU, c.p.MaxCPU), "resources.maxCPU")
	}
	if c.p.MaxMemoryMB > 0 && spec.MemoryMB > c.p.MaxMemoryMB {
		c.refuse("spec.memoryLimit", fmt.Sprintf("%d MB is above %d MB", spec.MemoryMB, c.p.MaxMemoryMB), "resources.maxMemoryMB")
	}
	for _, g := range job.TaskGroups {
		c.group(g, spec)
	}
}

func (c *checker) group(g *nomad.TaskGroup, spec EnvironmentSpec) {
	at := fmt.Sprintf("group %q", deref(g.Name))
	for name, v := range g.Volumes {
		if v == nil {
			continue
		}
		path := fmt.Sprintf("%s volume %q", at, name)
		if v.Type == "csi" {
			c.need(true, PermitCSIVolumes, path, "a CSI volume")
		} else {
			c.need(true, PermitHostVolumes, path, "a host volume")
		}
	}
	c.need(g.Consul != nil, PermitConsul, at+" consul", "a consul block")
	c.need(len(g.Services) > 0, PermitServices, at+" service", "a service registration")
	if d := g.EphemeralDisk; d != nil && c.p.MaxDiskMB > 0 && derefInt(d.SizeMB) > c.p.MaxDiskMB {
		c.refuse(at+" ephemeral_disk.size", fmt.Sprintf("%d MB is above %d MB", derefInt(d.SizeMB), c.p.MaxDiskMB), "resources.maxDiskMB")
	}
	groupNoNetwork := len(g.Networks) > 0 && g.Networks[0] != nil && g.Networks[0].Mode == "none"
	for _, t := range g.Tasks {
		c.task(at, t, spec, groupNoNetwork)
	}
}

func (c *checker) task(groupAt string, t *nomad.Task, spec EnvironmentSpec, groupNoNetwork bool) {
	at := fmt.Sprintf("%s task %q", groupAt, t.Name)
	if !slices.Contains(c.p.Drivers, t.Driver) {
		c.refuse(at+" driver", fmt.Sprintf("driver %q is not allowed", t.Driver), "drivers")
	}
	if !spec.NetworkAccess && !slices.Contains(containerDrivers, t.Driver) && !slices.Contains(c.p.UnisolatedDrivers, t.Driver) &&
		(!groupNoNetwork || !slices.Contains(groupIsolatingDrivers, t.Driver)) {
		c.refuse(at+" driver", fmt.Sprintf("the operator cannot take the network away from a %q task: without networkAccess its group needs network { mode = \"none\" }", t.Driver), "unisolatedDrivers")
	}
	if mode := fmt.Sprint(t.Config["network_mode"]); !spec.NetworkAccess && slices.Contains(containerDrivers, t.Driver) && mode != "none" {
		c.refuse(at+" config.network_mode", fmt.Sprintf("%q gives a network to an environment without networkAccess", mode), "spec.networkAccess")
	}
	c.config(at, t)
	c.need(len(t.Templates) > 0, PermitTemplates, at+" template", "a template block")
	c.need(len(t.Secrets) > 0, PermitTemplates, at+" secret", "a secret block")
	c.need(len(t.Artifacts) > 0, PermitArtifacts, at+" artifact", "an artifact block")
	c.need(t.Vault != nil, PermitVault, at+" vault", "a vault block")
	c.need(t.Consul != nil, PermitConsul, at+" consul", "a consul block")
	c.need(strings.HasPrefix(t.Kind, "connect-"), PermitConsul, at+" kind", "a Consul Connect task")
	c.need(len(t.Services) > 0, PermitServices, at+" service", "a service registration")
	c.need(t.Identity != nil || len(t.Identities) > 0, PermitWorkloadIdentity, at+" identity", "a workload identity")
	c.need(len(t.VolumeMounts) > 0, PermitHostVolumes, at+" volume_mount", "a volume mount")
	c.need(t.CSIPluginConfig != nil, PermitPrivileged, at+" csi_plugin", "a CSI plugin task")
	if r := t.Resources; r != nil {
		c.need(len(r.Devices) > 0, PermitDevices, at+" resources.device", "a device request")
		if derefInt(r.Cores) > 0 {
			c.refuse(at+" resources.cores", "whole cores escape the environment's cpuLimit; reserve cpu in MHz", "resources.maxCPU")
		}
	}
}

func (c *checker) config(at string, t *nomad.Task) {
	cfg := t.Config
	if image, ok := cfg["image"].(string); ok && slices.Contains(containerDrivers, t.Driver) && !c.imageAllowed(image) {
		c.refuse(at+" config.image", fmt.Sprintf("image %q is not allowed", image), "images")
	}
	if isTrue(cfg["privileged"]) {
		c.need(true, PermitPrivileged, at+" config.privileged", "a privileged task")
	}
	for _, k := range privilegedKeys {
		c.need(present(cfg[k]), PermitPrivileged, at+" config."+k, k)
	}
	for _, k := range mountKeys {
		c.need(present(cfg[k]), PermitHostVolumes, at+" config."+k, k)
	}
	c.need(present(cfg["devices"]), PermitDevices, at+" config.devices", "devices")
	if n, ok := number(cfg["oom_score_adj"]); ok && n < 0 {
		c.need(true, PermitPrivileged, at+" config.oom_score_adj", "a negative oom_score_adj (the node's OOM killer would take its neighbours first)")
	}
	for _, k := range sortedKeys(modeKeys) {
		v, ok := cfg[k]
		if !ok {
			continue
		}
		s, _ := v.(string)
		if !slices.Contains(modeKeys[k], strings.ToLower(s)) {
			c.need(true, PermitHostNamespaces, at+" config."+k, fmt.Sprintf("%s %q", k, fmt.Sprint(v)))
		}
	}
	for _, capName := range stringsOf(cfg["cap_add"]) {
		norm := strings.TrimPrefix(strings.ToUpper(capName), "CAP_")
		if !slices.Contains(c.p.Capabilities, norm) {
			c.refuse(at+" config.cap_add", fmt.Sprintf("capability %s is not allowed", norm), "capabilities")
		}
	}
	if t.Driver == "docker" && c.p.MaxPids > 0 {
		if n, ok := number(cfg["pids_limit"]); !ok || n <= 0 || n > float64(c.p.MaxPids) {
			c.refuse(at+" config.pids_limit", fmt.Sprintf("%v must be between 1 and %d", cfg["pids_limit"], c.p.MaxPids), "resources.maxPids")
		}
	}
}

func (c *checker) imageAllowed(image string) bool {
	if len(c.p.Images) == 0 {
		return true
	}
	for _, prefix := range c.p.Images {
		if strings.HasPrefix(image, prefix) {
			return true
		}
	}
	return false
}

func isTrue(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return strings.EqualFold(b, "true")
	}
	return false
}

// present is true for a set, non-empty option: an empty list or map asks for nothing.
func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case []any:
		return len(x) > 0
	case []string:
		return len(x) > 0
	case []map[string]any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	case string:
		return x != ""
	}
	return true
}

func stringsOf(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	case string:
		return []string{x}
	}
	return nil
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func quoteOrDefault(ns string) string {
	if ns == "" {
		return "(the operator's default)"
	}
	return fmt.Sprintf("%q", ns)
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
