package nomadbridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Defaults the operator puts on a runner job where the template leaves them
// unset. Each is there for a reason seen in production by the seed project.
const (
	// DefaultMemoryReservationMB is what a runner reserves of a node's memory
	// when Nomad's memory oversubscription is on; memoryLimit is then the hard
	// ceiling (memory_max). Packing nodes by the ceiling wastes them; packing
	// by nothing crashes agents.
	DefaultMemoryReservationMB = 50
	// DefaultEphemeralDiskMB keeps a runner's disk footprint small.
	DefaultEphemeralDiskMB = 100
	// DefaultLogMaxFiles and DefaultLogMaxFileSizeMB keep task logs tiny.
	DefaultLogMaxFiles      = 1
	DefaultLogMaxFileSizeMB = 1
	// DefaultKillSignal: runners hold no state worth a graceful stop.
	DefaultKillSignal = "SIGKILL"
)

// EnvironmentSpec is what the renderer needs of an ExecutionEnvironment; kept
// free of Kubernetes types so rendering stays a pure function of its inputs.
type EnvironmentSpec struct {
	Image         string
	CPU           int // MHz
	MemoryMB      int // hard ceiling
	NetworkAccess bool
	ExposedPorts  []int
	// Namespace, Region, Datacenters and NodePool are the environment's
	// spec.nomad: where set, they win over the template's.
	Namespace   string
	Region      string
	Datacenters []string
	NodePool    string
	// OperatorNamespace is the Nomad namespace of runners that neither the
	// spec nor the template places: the operator's default.
	OperatorNamespace string
	// OperatorRegion is the one Nomad region the operator talks to; a job
	// asking for another is refused.
	OperatorRegion string
	// PidsLimit is the docker pids_limit of tasks whose template leaves it
	// unset (0: leave it unset).
	PidsLimit int
	// MemoryOversubscription says whether the Nomad cluster honours memory_max
	// (its scheduler configuration). Without it Nomad enforces `memory` as the
	// ceiling, so the runner must reserve its whole limit.
	MemoryOversubscription bool
}

// DefaultTemplate is the built-in runner job: one group, one docker task that
// keeps the container alive until the runner is deleted.
func DefaultTemplate() *nomad.Job {
	task := nomad.NewTask("runner", "docker").
		SetConfig("command", "sleep").
		SetConfig("args", []string{"infinity"}).
		// cpuLimit is a ceiling, not a share: a busy loop must not slow the
		// runners next to it.
		SetConfig("cpu_hard_limit", true)
	job := nomad.NewServiceJob("template", "template", "", 50)
	job.AddTaskGroup(nomad.NewTaskGroup("runner", 1).AddTask(task))
	return job
}

// DecodeJSONTemplate reads a job in the JSON of Nomad's API, either bare or
// wrapped as {"Job": {...}} the way `nomad job run -output` prints it.
func DecodeJSONTemplate(src string) (*nomad.Job, error) {
	var wrapped struct{ Job *nomad.Job }
	if err := json.Unmarshal([]byte(src), &wrapped); err == nil && wrapped.Job != nil {
		return wrapped.Job, nil
	}
	var job nomad.Job
	if err := json.Unmarshal([]byte(src), &job); err != nil {
		return nil, fmt.Errorf("decode JSON job template: %w: %s", ErrInvalidJob, err)
	}
	return &job, nil
}

// LooksLikeJSON tells a JSON template from HCL by its first character.
func LooksLikeJSON(src string) bool {
	s := strings.TrimSpace(src)
	return strings.HasPrefix(s, "{")
}

// RenderEnvironmentJob applies an environment's spec and the operator's
// defaults to a template and returns the job every runner of the environment
// is a copy of (without a runner's ID and meta: see ForRunner). The template is
// not modified. Image, CPU, memory and network always come from the spec; the
// other defaults only fill what the template leaves unset.
func RenderEnvironmentJob(template *nomad.Job, spec EnvironmentSpec) (*nomad.Job, error) {
	if template == nil {
		return nil, fmt.Errorf("render runner job: %w: no template", ErrInvalidJob)
	}
	job := deepCopyJob(template)
	// A group of count 0 never runs: Poseidon's templates carry one for
	// their own bookkeeping.
	job.TaskGroups = slices.DeleteFunc(job.TaskGroups, func(g *nomad.TaskGroup) bool {
		return g != nil && g.Count != nil && *g.Count == 0
	})
	if len(job.TaskGroups) != 1 {
		return nil, fmt.Errorf("render runner job: %w: a runner template needs exactly one group, it has %d", ErrInvalidJob, len(job.TaskGroups))
	}
	group := job.TaskGroups[0]
	if group == nil {
		return nil, fmt.Errorf("render runner job: %w: the task group is null", ErrInvalidJob)
	}
	if slices.Contains(group.Tasks, nil) {
		return nil, fmt.Errorf("render runner job: %w: group %q has a null task", ErrInvalidJob, deref(group.Name))
	}
	if len(group.Tasks) == 0 {
		return nil, fmt.Errorf("render runner job: %w: group %q has no task", ErrInvalidJob, deref(group.Name))
	}
	// A batch job becomes a service job: with no restarts and no
	// rescheduling (the defaults below, which Poseidon's batch templates set
	// themselves) both run one allocation until it is stopped, and one job
	// type keeps one mapping from allocations to a runner's phase.
	if t := deref(job.Type); t != "" && t != nomad.JobTypeService && t != nomad.JobTypeBatch {
		return nil, fmt.Errorf("render runner job: %w: type %q: a runner job must be a service or batch job", ErrInvalidJob, t)
	}
	if job.Periodic != nil || job.ParameterizedJob != nil {
		return nil, fmt.Errorf("render runner job: %w: a runner job cannot be periodic or parameterized", ErrInvalidJob)
	}
	job.Type = ptr(nomad.JobTypeService)
	// One allocation per job: a runner is one job, so the operator decides which
	// runner goes away when the pool shrinks.
	group.Count = ptr(1)

	if err := applyPlacement(job, spec); err != nil {
		return nil, err
	}
	if len(job.Spreads) == 0 && len(group.Spreads) == 0 {
		job.Spreads = []*nomad.Spread{{Attribute: "${node.unique.id}"}}
	}
	if group.RestartPolicy == nil {
		// A restarted runner is a different runner: fail instead, and let the
		// operator replace it (or tell its holder).
		group.RestartPolicy = &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr(nomad.RestartPolicyModeFail)}
	}
	if group.ReschedulePolicy == nil {
		group.ReschedulePolicy = &nomad.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)}
	}
	if group.EphemeralDisk == nil {
		group.EphemeralDisk = &nomad.EphemeralDisk{SizeMB: ptr(DefaultEphemeralDiskMB)}
	}

	// The first task is the runner; the others (sidecars) keep what the
	// template says, and their resources come out of the environment's limits.
	task := group.Tasks[0]
	sidecarCPU, sidecarMemory := sidecarResources(group.Tasks[1:])
	cpu, memory := spec.CPU-sidecarCPU, spec.MemoryMB-sidecarMemory
	if cpu < 1 || memory < MinTaskMemoryMB {
		return nil, fmt.Errorf("render runner job: %w: the sidecars of group %q reserve %d MHz and %d MB, which leaves the runner task less than 1 MHz or %d MB of the environment's cpuLimit %d and memoryLimit %d",
			ErrInvalidJob, deref(group.Name), sidecarCPU, sidecarMemory, MinTaskMemoryMB, spec.CPU, spec.MemoryMB)
	}
	if task.KillSignal == "" {
		task.KillSignal = DefaultKillSignal
	}
	if task.KillTimeout == nil {
		task.KillTimeout = ptr(time.Duration(0))
	}
	if task.LogConfig == nil {
		task.LogConfig = &nomad.LogConfig{MaxFiles: ptr(DefaultLogMaxFiles), MaxFileSizeMB: ptr(DefaultLogMaxFileSizeMB)}
	}
	if task.Resources == nil {
		task.Resources = &nomad.Resources{}
	}
	task.Resources.CPU = ptr(cpu)
	task.Resources.Cores = nil
	if spec.MemoryOversubscription && memory > DefaultMemoryReservationMB {
		task.Resources.MemoryMB = ptr(DefaultMemoryReservationMB)
		task.Resources.MemoryMaxMB = ptr(memory)
	} else {
		task.Resources.MemoryMB = ptr(memory)
		task.Resources.MemoryMaxMB = nil
	}
	if isContainerDriver(task.Driver) {
		if task.Config == nil {
			task.Config = map[string]any{}
		}
		task.Config["image"] = spec.Image
	}
	for _, t := range group.Tasks {
		if t.Driver == "docker" && spec.PidsLimit > 0 {
			if t.Config == nil {
				t.Config = map[string]any{}
			}
			if _, set := t.Config["pids_limit"]; !set {
				t.Config["pids_limit"] = spec.PidsLimit
			}
		}
	}
	applyNetwork(group, task, spec)
	if job.Meta == nil {
		job.Meta = map[string]string{}
	}
	job.Meta[MetaImage] = spec.Image
	return job, nil
}

// ForRunner returns a copy of an environment's rendered job for one runner:
// its own ID, the meta that maps the job back to its Runner, and no
// deployments (see NoDeployments).
func ForRunner(envJob *nomad.Job, jobID string, meta RunnerMeta) *nomad.Job {
	job := deepCopyJob(envJob)
	job.ID, job.Name = ptr(jobID), ptr(jobID)
	if job.Meta == nil {
		job.Meta = map[string]string{}
	}
	// A template's own value for one of our keys (a UID the runner has not)
	// must not survive into the runner's job.
	for _, k := range runnerMetaKeys {
		delete(job.Meta, k)
	}
	for k, v := range meta.Map() {
		job.Meta[k] = v
	}
	NoDeployments(job)
	return job
}

// NoDeployments turns deployments off for every group of job (max_parallel =
// 0: forced updates). A runner job is registered once and never updated, so a
// deployment only costs Nomad work while it starts (a deployment per runner,
// watched until healthy). And purging a job whose deployment is still
// running can crash a Nomad 1.11.3 server: the purge's plan cancels the
// deployment without the job, and applyPlan dereferences the plan's missing
// job info (nomad/plan_apply.go:249).
func NoDeployments(job *nomad.Job) {
	job.Update = nil
	for _, tg := range job.TaskGroups {
		tg.Update = &nomad.UpdateStrategy{MaxParallel: ptr(0)}
	}
}

// TemplateHash identifies a rendered environment job: two specs that render
// the same job have the same hash, so a runner is stale exactly when its job
// would differ. JSON of the api struct is deterministic (map keys are sorted).
func TemplateHash(envJob *nomad.Job) (string, error) {
	b, err := json.Marshal(envJob)
	if err != nil {
		return "", fmt.Errorf("hash runner job: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16], nil
}

// applyPlacement puts the job where the spec says, else where the template
// says, else in the operator's default namespace. Whether it may go there is
// the environment policy's question; the region is the operator's own, as
// every call it makes for a runner goes to that one region.
func applyPlacement(job *nomad.Job, spec EnvironmentSpec) error {
	pick := func(specValue string, templateValue *string, fallback string) *string {
		switch {
		case specValue != "":
			return ptr(specValue)
		case deref(templateValue) != "":
			return templateValue
		case fallback != "":
			return ptr(fallback)
		}
		return nil
	}
	if region := deref(pick(spec.Region, job.Region, "")); region != "" && region != spec.OperatorRegion {
		return fmt.Errorf("render runner job: %w: region %q: this operator serves Nomad region %q only (run one operator per region)", ErrInvalidJob, region, spec.OperatorRegion)
	}
	// Unset, the region is the one of the operator's client.
	job.Region = nil
	job.Namespace = pick(spec.Namespace, job.Namespace, spec.OperatorNamespace)
	job.NodePool = pick(spec.NodePool, job.NodePool, "")
	if len(spec.Datacenters) > 0 {
		job.Datacenters = append([]string(nil), spec.Datacenters...)
	}
	if len(job.Datacenters) == 0 {
		job.Datacenters = []string{"*"}
	}
	return nil
}

// applyNetwork enforces the environment's network: none unless networkAccess,
// and with it the exposed ports mapped to dynamic host ports.
func applyNetwork(group *nomad.TaskGroup, task *nomad.Task, spec EnvironmentSpec) {
	if !spec.NetworkAccess {
		// A template's own `network { mode = "none" }` is what isolates a
		// task of a driver without network_mode (exec, raw_exec, java): keep
		// it, without ports. Any other group network gives access: drop it.
		var isolated []*nomad.NetworkResource
		if len(group.Networks) > 0 && group.Networks[0] != nil && group.Networks[0].Mode == "none" {
			isolated = []*nomad.NetworkResource{{Mode: "none"}}
		}
		group.Networks = isolated
		for _, t := range group.Tasks {
			if t.Resources != nil {
				t.Resources.Networks = nil
			}
			if isContainerDriver(t.Driver) {
				if t.Config == nil {
					t.Config = map[string]any{}
				}
				// A template's own other mode (host, a container's) is left
				// for the policy to refuse: overriding it would hide a
				// template that does not mean what it says.
				if mode, set := t.Config["network_mode"]; !set || mode == "" {
					t.Config["network_mode"] = "none"
				}
				delete(t.Config, "ports")
			}
		}
		return
	}
	if isContainerDriver(task.Driver) && task.Config["network_mode"] == "none" {
		delete(task.Config, "network_mode")
	}
	if len(spec.ExposedPorts) == 0 {
		return
	}
	var ports []nomad.Port
	var labels []string
	for _, p := range spec.ExposedPorts {
		label := PortLabel(p)
		ports = append(ports, nomad.Port{Label: label, To: p})
		labels = append(labels, label)
	}
	if len(group.Networks) == 0 {
		group.Networks = []*nomad.NetworkResource{{}}
	}
	net := group.Networks[0]
	net.DynamicPorts = append(withoutLabels(net.DynamicPorts, labels), ports...)
	if isContainerDriver(task.Driver) {
		task.Config["ports"] = labels
	}
}

// PortLabel is the network port label of an exposed container port.
func PortLabel(port int) string { return fmt.Sprintf("port-%d", port) }

func withoutLabels(ports []nomad.Port, labels []string) []nomad.Port {
	var out []nomad.Port
	for _, p := range ports {
		drop := false
		for _, l := range labels {
			drop = drop || p.Label == l
		}
		if !drop {
			out = append(out, p)
		}
	}
	return out
}

func isContainerDriver(driver string) bool {
	return driver == "docker" || driver == "podman"
}

func deepCopyJob(job *nomad.Job) *nomad.Job {
	b, err := json.Marshal(job)
	if err != nil {
		panic(errors.Join(errors.New("copy nomad job"), err)) // a Job always marshals
	}
	var out nomad.Job
	if err := json.Unmarshal(b, &out); err != nil {
		panic(errors.Join(errors.New("copy nomad job"), err))
	}
	return &out
}

func ptr[T any](v T) *T { return &v }

// MinTaskMemoryMB is Nomad's floor for a task's memory.
const MinTaskMemoryMB = 10

// sidecarResources sums the CPU (MHz) and memory ceiling (MB) of the tasks
// beside the runner task, with Nomad's defaults for what a task leaves unset,
// so that all of a runner's tasks together stay within its environment's limits.
func sidecarResources(tasks []*nomad.Task) (cpu, memory int) {
	defaults := nomad.DefaultResources()
	for _, t := range tasks {
		r := t.Resources
		if r == nil {
			r = &nomad.Resources{}
		}
		c, m := r.CPU, r.MemoryMB
		if c == nil {
			c = defaults.CPU
		}
		if m == nil {
			m = defaults.MemoryMB
		}
		cpu += *c
		memory += max(*m, derefInt(r.MemoryMaxMB))
	}
	return cpu, memory
}
