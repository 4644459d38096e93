package nomaddev

import (
	nomad "github.com/hashicorp/nomad/api"
)

// SleepTemplateHCL is a runner template that works on a dev agent without docker:
// one raw_exec task sleeping until the job is stopped. It is the template of the
// sample environment in config/samples.
const SleepTemplateHCL = `
job "template" {
  group "runner" {
    task "runner" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = ["infinity"]
      }
    }
  }
}`

// SleepJob is a ready-to-register raw_exec job of one sleeping task (cpu 50,
// memory 32), with no restarts and no rescheduling, carrying meta.
func SleepJob(id string, meta map[string]string) *nomad.Job {
	task := nomad.NewTask("runner", "raw_exec").
		SetConfig("command", "/bin/sleep").
		SetConfig("args", []string{"3600"})
	task.Resources = &nomad.Resources{CPU: ptr(50), MemoryMB: ptr(32)}
	group := nomad.NewTaskGroup("runner", 1).AddTask(task)
	group.RestartPolicy = &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")}
	group.ReschedulePolicy = &nomad.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)}
	job := nomad.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"*"}
	job.AddTaskGroup(group)
	job.Meta = meta
	// As a runner job (nomadbridge.NoDeployments): the raw anchors time the
	// same Nomad work, and purging a job whose deployment still runs can
	// crash a Nomad 1.11.3 server.
	group.Update = &nomad.UpdateStrategy{MaxParallel: ptr(0)}
	return job
}

func ptr[T any](v T) *T { return &v }
