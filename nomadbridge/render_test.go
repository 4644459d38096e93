package nomadbridge_test

import (
	"errors"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"k8s.io/utils/ptr"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func baseSpec() nomadbridge.EnvironmentSpec {
	return nomadbridge.EnvironmentSpec{Image: "python:3.13", CPU: 200, MemoryMB: 512, OperatorNamespace: "default", OperatorRegion: "global", PidsLimit: 1024}
}

func rawExecTemplate() *nomad.Job {
	task := nomad.NewTask("runner", "raw_exec").SetConfig("command", "/bin/sleep").SetConfig("args", []string{"infinity"})
	job := nomad.NewServiceJob("template", "template", "", 50)
	job.AddTaskGroup(nomad.NewTaskGroup("runner", 3).AddTask(task))
	return job
}

func TestRenderEnvironmentJob(t *testing.T) {
	cases := []struct {
		name     string
		template func() *nomad.Job
		spec     func(*nomadbridge.EnvironmentSpec)
		check    func(t *testing.T, job *nomad.Job)
	}{{
		name:     "default template gets the spec and every production default",
		template: nomadbridge.DefaultTemplate,
		check: func(t *testing.T, job *nomad.Job) {
			g := job.TaskGroups[0]
			task := g.Tasks[0]
			expect(t, "count", *g.Count, 1)
			expect(t, "image", task.Config["image"], any("python:3.13"))
			expect(t, "network_mode", task.Config["network_mode"], any("none"))
			expect(t, "cpu", *task.Resources.CPU, 200)
			expect(t, "memory (no oversubscription: the whole limit)", *task.Resources.MemoryMB, 512)
			expect(t, "memory_max unset", task.Resources.MemoryMaxMB == nil, true)
			expect(t, "kill_signal", task.KillSignal, "SIGKILL")
			expect(t, "kill_timeout", *task.KillTimeout, time.Duration(0))
			expect(t, "restart attempts", *g.RestartPolicy.Attempts, 0)
			expect(t, "restart mode", *g.RestartPolicy.Mode, "fail")
			expect(t, "reschedule attempts", *g.ReschedulePolicy.Attempts, 0)
			expect(t, "reschedule unlimited", *g.ReschedulePolicy.Unlimited, false)
			expect(t, "ephemeral disk", *g.EphemeralDisk.SizeMB, nomadbridge.DefaultEphemeralDiskMB)
			expect(t, "log files", *task.LogConfig.MaxFiles, 1)
			expect(t, "log size", *task.LogConfig.MaxFileSizeMB, 1)
			expect(t, "spread", job.Spreads[0].Attribute, "${node.unique.id}")
			expect(t, "datacenters", len(job.Datacenters) == 1 && job.Datacenters[0] == "*", true)
			expect(t, "type", *job.Type, "service")
			expect(t, "image meta", job.Meta[nomadbridge.MetaImage], "python:3.13")
			expect(t, "namespace: the operator's", *job.Namespace, "default")
			expect(t, "region: the client's", job.Region == nil, true)
			expect(t, "pids_limit", task.Config["pids_limit"], any(1024))
			expect(t, "cpu_hard_limit", task.Config["cpu_hard_limit"], any(true))
		},
	}, {
		name:     "memory oversubscription: small reservation, limit as memory_max",
		template: nomadbridge.DefaultTemplate,
		spec:     func(s *nomadbridge.EnvironmentSpec) { s.MemoryOversubscription = true },
		check: func(t *testing.T, job *nomad.Job) {
			r := job.TaskGroups[0].Tasks[0].Resources
			expect(t, "memory", *r.MemoryMB, nomadbridge.DefaultMemoryReservationMB)
			expect(t, "memory_max", *r.MemoryMaxMB, 512)
		},
	}, {
		name:     "oversubscription with a limit below the reservation reserves the limit",
		template: nomadbridge.DefaultTemplate,
		spec: func(s *nomadbridge.EnvironmentSpec) {
			s.MemoryOversubscription, s.MemoryMB = true, 32
		},
		check: func(t *testing.T, job *nomad.Job) {
			r := job.TaskGroups[0].Tasks[0].Resources
			expect(t, "memory", *r.MemoryMB, 32)
			expect(t, "memory_max unset", r.MemoryMaxMB == nil, true)
		},
	}, {
		name: "the template's own choices win where the spec is silent",
		template: func() *nomad.Job {
			j := nomadbridge.DefaultTemplate()
			g := j.TaskGroups[0]
			g.RestartPolicy = &nomad.RestartPolicy{Attempts: ptr.To(2), Mode: ptr.To("delay")}
			g.EphemeralDisk = &nomad.EphemeralDisk{SizeMB: ptr.To(500)}
			g.Tasks[0].KillSignal = "SIGTERM"
			g.Tasks[0].KillTimeout = ptr.To(5 * time.Second)
			g.Tasks[0].LogConfig = &nomad.LogConfig{MaxFiles: ptr.To(3), MaxFileSizeMB: ptr.To(10)}
			j.Spreads = []*nomad.Spread{{Attribute: "${node.datacenter}"}}
			j.Datacenters = []string{"dc9"}
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			g := job.TaskGroups[0]
			expect(t, "restart attempts", *g.RestartPolicy.Attempts, 2)
			expect(t, "disk", *g.EphemeralDisk.SizeMB, 500)
			expect(t, "kill_signal", g.Tasks[0].KillSignal, "SIGTERM")
			expect(t, "kill_timeout", *g.Tasks[0].KillTimeout, 5*time.Second)
			expect(t, "log files", *g.Tasks[0].LogConfig.MaxFiles, 3)
			expect(t, "spreads", len(job.Spreads), 1)
			expect(t, "spread", job.Spreads[0].Attribute, "${node.datacenter}")
			expect(t, "datacenters", job.Datacenters[0], "dc9")
		},
	}, {
		name: "the spec always wins for image, cpu and memory",
		template: func() *nomad.Job {
			j := nomadbridge.DefaultTemplate()
			task := j.TaskGroups[0].Tasks[0]
			task.Config["image"] = "evil:latest"
			task.Config["network_mode"] = "host"
			task.Resources = &nomad.Resources{CPU: ptr.To(9999), MemoryMB: ptr.To(9999), MemoryMaxMB: ptr.To(99999), Cores: ptr.To(4)}
			j.TaskGroups[0].Networks = []*nomad.NetworkResource{{Mode: "host"}}
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			task := job.TaskGroups[0].Tasks[0]
			expect(t, "image", task.Config["image"], any("python:3.13"))
			expect(t, "network_mode: the template's, for the policy to refuse", task.Config["network_mode"], any("host"))
			expect(t, "cpu", *task.Resources.CPU, 200)
			expect(t, "cores dropped", task.Resources.Cores == nil, true)
			expect(t, "memory", *task.Resources.MemoryMB, 512)
			expect(t, "memory_max dropped", task.Resources.MemoryMaxMB == nil, true)
			expect(t, "group networks dropped", len(job.TaskGroups[0].Networks), 0)
		},
	}, {
		name:     "network access maps exposed ports to dynamic host ports",
		template: nomadbridge.DefaultTemplate,
		spec: func(s *nomadbridge.EnvironmentSpec) {
			s.NetworkAccess, s.ExposedPorts = true, []int{8080, 443}
		},
		check: func(t *testing.T, job *nomad.Job) {
			task := job.TaskGroups[0].Tasks[0]
			_, hasMode := task.Config["network_mode"]
			expect(t, "no network_mode", hasMode, false)
			ports := job.TaskGroups[0].Networks[0].DynamicPorts
			expect(t, "ports", len(ports), 2)
			expect(t, "port 0", ports[0], nomad.Port{Label: "port-8080", To: 8080})
			expect(t, "port 1", ports[1], nomad.Port{Label: "port-443", To: 443})
			labels, _ := task.Config["ports"].([]string)
			expect(t, "docker ports", len(labels) == 2 && labels[0] == "port-8080" && labels[1] == "port-443", true)
		},
	}, {
		name:     "raw_exec: no image or network_mode in a driver that has none",
		template: rawExecTemplate,
		check: func(t *testing.T, job *nomad.Job) {
			task := job.TaskGroups[0].Tasks[0]
			_, hasImage := task.Config["image"]
			_, hasMode := task.Config["network_mode"]
			expect(t, "image", hasImage, false)
			expect(t, "network_mode", hasMode, false)
			expect(t, "count forced to 1", *job.TaskGroups[0].Count, 1)
			expect(t, "image meta", job.Meta[nomadbridge.MetaImage], "python:3.13")
		},
	}, {
		name: "placement: the spec wins over the template, the region is the operator's",
		template: func() *nomad.Job {
			j := rawExecTemplate()
			j.Namespace, j.NodePool, j.Region = ptr.To("template-ns"), ptr.To("template-pool"), ptr.To("global")
			return j
		},
		spec: func(s *nomadbridge.EnvironmentSpec) {
			s.Namespace, s.Region, s.Datacenters, s.NodePool = "runners", "global", []string{"dc1", "dc2"}, "sandbox"
		},
		check: func(t *testing.T, job *nomad.Job) {
			expect(t, "namespace", *job.Namespace, "runners")
			expect(t, "region left to the client", job.Region == nil, true)
			expect(t, "datacenters", len(job.Datacenters) == 2 && job.Datacenters[1] == "dc2", true)
			expect(t, "node pool", *job.NodePool, "sandbox")
		},
	}, {
		name: "placement: the template's where the spec is silent",
		template: func() *nomad.Job {
			j := rawExecTemplate()
			j.Namespace, j.NodePool = ptr.To("template-ns"), ptr.To("template-pool")
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			expect(t, "namespace", *job.Namespace, "template-ns")
			expect(t, "node pool", *job.NodePool, "template-pool")
		},
	}, {
		name: "a Poseidon batch template becomes a service job, its count-0 config group dropped",
		template: func() *nomad.Job {
			j := nomadbridge.DefaultTemplate()
			j.Type = ptr.To("batch")
			j.AddTaskGroup(nomad.NewTaskGroup("config", 0).AddTask(nomad.NewTask("config", "exec")))
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			expect(t, "type", *job.Type, "service")
			expect(t, "groups", len(job.TaskGroups), 1)
			expect(t, "the runner group", *job.TaskGroups[0].Name, "runner")
		},
	}, {
		name: "no network access keeps a template's network mode none (exec, raw_exec) and cuts every container task off",
		template: func() *nomad.Job {
			j := rawExecTemplate()
			g := j.TaskGroups[0]
			g.Networks = []*nomad.NetworkResource{{Mode: "none", DynamicPorts: []nomad.Port{{Label: "x"}}}}
			g.AddTask(nomad.NewTask("sidecar", "docker").
				Require(&nomad.Resources{CPU: ptr.To(20), MemoryMB: ptr.To(30)}))
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			g := job.TaskGroups[0]
			expect(t, "group networks", len(g.Networks), 1)
			expect(t, "group network mode", g.Networks[0].Mode, "none")
			expect(t, "no ports", len(g.Networks[0].DynamicPorts), 0)
			expect(t, "sidecar network_mode", g.Tasks[1].Config["network_mode"], any("none"))
		},
	}, {
		name: "no network access drops a group network that gives access",
		template: func() *nomad.Job {
			j := rawExecTemplate()
			j.TaskGroups[0].Networks = []*nomad.NetworkResource{{Mode: "bridge"}}
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			expect(t, "group networks", len(job.TaskGroups[0].Networks), 0)
		},
	}, {
		name: "sidecars share the environment's limits: the runner task gets the rest",
		template: func() *nomad.Job {
			j := nomadbridge.DefaultTemplate()
			j.TaskGroups[0].AddTask(nomad.NewTask("log", "docker").Require(&nomad.Resources{CPU: ptr.To(50), MemoryMB: ptr.To(64), MemoryMaxMB: ptr.To(100)}))
			j.TaskGroups[0].AddTask(nomad.NewTask("defaults", "docker"))
			return j
		},
		spec: func(s *nomadbridge.EnvironmentSpec) { s.CPU, s.MemoryMB = 1000, 1024 },
		check: func(t *testing.T, job *nomad.Job) {
			r := job.TaskGroups[0].Tasks[0].Resources
			expect(t, "runner cpu: 1000 - 50 - Nomad's default 100", *r.CPU, 850)
			expect(t, "runner memory: 1024 - 100 (a ceiling) - Nomad's default 300", *r.MemoryMB, 624)
			expect(t, "pids_limit on every docker task", job.TaskGroups[0].Tasks[2].Config["pids_limit"], any(1024))
		},
	}, {
		name: "a template's own pids_limit is kept (the policy bounds it)",
		template: func() *nomad.Job {
			j := nomadbridge.DefaultTemplate()
			j.TaskGroups[0].Tasks[0].Config["pids_limit"] = 64
			return j
		},
		check: func(t *testing.T, job *nomad.Job) {
			expect(t, "pids_limit (JSON numbers are float64)", job.TaskGroups[0].Tasks[0].Config["pids_limit"], any(float64(64)))
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := baseSpec()
			if tc.spec != nil {
				tc.spec(&spec)
			}
			template := tc.template()
			before, _ := nomadbridge.TemplateHash(template)
			job, err := nomadbridge.RenderEnvironmentJob(template, spec)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if after, _ := nomadbridge.TemplateHash(template); after != before {
				t.Error("rendering modified the template")
			}
			tc.check(t, job)
		})
	}
}

func TestRenderEnvironmentJobRejectsTemplatesThatCannotBeRunners(t *testing.T) {
	cases := map[string]func() *nomad.Job{
		"two groups": func() *nomad.Job {
			j := rawExecTemplate()
			j.AddTaskGroup(nomad.NewTaskGroup("other", 1).AddTask(nomad.NewTask("t", "raw_exec")))
			return j
		},
		"no group": func() *nomad.Job { return nomad.NewServiceJob("t", "t", "", 50) },
		"no task": func() *nomad.Job {
			j := nomad.NewServiceJob("t", "t", "", 50)
			j.AddTaskGroup(nomad.NewTaskGroup("g", 1))
			return j
		},
		"system job":                     func() *nomad.Job { j := rawExecTemplate(); j.Type = ptr.To("system"); return j },
		"sysbatch job":                   func() *nomad.Job { j := rawExecTemplate(); j.Type = ptr.To("sysbatch"); return j },
		"another region in the template": func() *nomad.Job { j := rawExecTemplate(); j.Region = ptr.To("eu"); return j },
		"sidecars taking the whole budget": func() *nomad.Job {
			j := rawExecTemplate()
			j.TaskGroups[0].AddTask(nomad.NewTask("hog", "raw_exec").Require(&nomad.Resources{CPU: ptr.To(200), MemoryMB: ptr.To(32)}))
			return j
		},
		"periodic job": func() *nomad.Job {
			j := rawExecTemplate()
			j.Periodic = &nomad.PeriodicConfig{Spec: ptr.To("@daily")}
			return j
		},
		"nil": func() *nomad.Job { return nil },
	}
	for name, template := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := nomadbridge.RenderEnvironmentJob(template(), baseSpec())
			if !errors.Is(err, nomadbridge.ErrInvalidJob) {
				t.Errorf("got %v, want ErrInvalidJob", err)
			}
		})
	}
}

func TestForRunnerOwnsItsMetaKeys(t *testing.T) {
	envJob, err := nomadbridge.RenderEnvironmentJob(rawExecTemplate(), baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	// A template may carry any meta, also one of our keys.
	envJob.Meta[nomadbridge.MetaRunnerUID] = "planted"
	envJob.Meta[nomadbridge.MetaRunner] = "planted"
	envJob.Meta["team"] = "data"
	meta := nomadbridge.RunnerMeta{Instance: "i", Namespace: "ns", Environment: "python", Runner: "python-abcde"}
	job := nomadbridge.ForRunner(envJob, nomadbridge.NewRunnerJobID("python"), meta)
	got, ok := nomadbridge.ParseRunnerMeta(job.Meta)
	expect(t, "meta is exactly the runner's", got == meta && ok, true)
	_, planted := job.Meta[nomadbridge.MetaRunnerUID]
	expect(t, "the template's UID is dropped", planted, false)
	expect(t, "other meta kept", job.Meta["team"], "data")

	meta.UID = "uid-1"
	job = nomadbridge.ForRunner(envJob, nomadbridge.NewRunnerJobID("python"), meta)
	expect(t, "the runner's UID", job.Meta[nomadbridge.MetaRunnerUID], "uid-1")
}

func TestForRunnerAndTemplateHash(t *testing.T) {
	envJob, err := nomadbridge.RenderEnvironmentJob(rawExecTemplate(), baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := nomadbridge.TemplateHash(envJob)
	meta := nomadbridge.RunnerMeta{Instance: "i", Namespace: "ns", Environment: "python", Runner: "python-abcde"}
	job := nomadbridge.ForRunner(envJob, "python-0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e", meta)
	expect(t, "id", *job.ID, "python-0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e")
	expect(t, "name", *job.Name, *job.ID)
	got, ok := nomadbridge.ParseRunnerMeta(job.Meta)
	expect(t, "meta", got == meta && ok, true)
	expect(t, "image meta kept", job.Meta[nomadbridge.MetaImage], "python:3.13")
	for _, tg := range job.TaskGroups {
		expect(t, "group "+*tg.Name+" has deployments off (max_parallel 0)", tg.Update != nil && tg.Update.MaxParallel != nil && *tg.Update.MaxParallel == 0, true)
	}
	if again, _ := nomadbridge.TemplateHash(envJob); again != hash {
		t.Error("ForRunner modified the environment job")
	}

	same, _ := nomadbridge.RenderEnvironmentJob(rawExecTemplate(), baseSpec())
	if h, _ := nomadbridge.TemplateHash(same); h != hash {
		t.Errorf("the same spec hashed differently: %s vs %s", h, hash)
	}
	for name, change := range map[string]func(*nomadbridge.EnvironmentSpec){
		"image":   func(s *nomadbridge.EnvironmentSpec) { s.Image = "python:3.14" },
		"cpu":     func(s *nomadbridge.EnvironmentSpec) { s.CPU++ },
		"memory":  func(s *nomadbridge.EnvironmentSpec) { s.MemoryMB++ },
		"network": func(s *nomadbridge.EnvironmentSpec) { s.NetworkAccess = true },
		"pool":    func(s *nomadbridge.EnvironmentSpec) { s.NodePool = "other" },
	} {
		spec := baseSpec()
		change(&spec)
		other, _ := nomadbridge.RenderEnvironmentJob(rawExecTemplate(), spec)
		docker, _ := nomadbridge.RenderEnvironmentJob(nomadbridge.DefaultTemplate(), spec)
		dockerBase, _ := nomadbridge.RenderEnvironmentJob(nomadbridge.DefaultTemplate(), baseSpec())
		if h, _ := nomadbridge.TemplateHash(docker); h == mustHash(t, dockerBase) {
			t.Errorf("changing %s did not change the template hash of a docker job", name)
		}
		if name == "network" {
			continue // raw_exec has no network isolation: the job is the same
		}
		if h, _ := nomadbridge.TemplateHash(other); h == hash {
			t.Errorf("changing %s did not change the template hash", name)
		}
	}
}

func TestDecodeJSONTemplate(t *testing.T) {
	for _, src := range []string{
		`{"ID":"t","TaskGroups":[{"Name":"g","Tasks":[{"Name":"runner","Driver":"raw_exec"}]}]}`,
		`{"Job":{"ID":"t","TaskGroups":[{"Name":"g","Tasks":[{"Name":"runner","Driver":"raw_exec"}]}]}}`,
	} {
		if !nomadbridge.LooksLikeJSON("  \n" + src) {
			t.Errorf("not taken as JSON: %s", src)
		}
		job, err := nomadbridge.DecodeJSONTemplate(src)
		if err != nil || *job.ID != "t" || job.TaskGroups[0].Tasks[0].Driver != "raw_exec" {
			t.Errorf("DecodeJSONTemplate(%s) = %+v, %v", src, job, err)
		}
	}
	if nomadbridge.LooksLikeJSON(`job "t" {}`) {
		t.Error("HCL taken as JSON")
	}
	if _, err := nomadbridge.DecodeJSONTemplate(`{"ID": 5`); !errors.Is(err, nomadbridge.ErrInvalidJob) {
		t.Errorf("malformed JSON: got %v", err)
	}
}

func mustHash(t *testing.T, job *nomad.Job) string {
	t.Helper()
	h, err := nomadbridge.TemplateHash(job)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func expect[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
