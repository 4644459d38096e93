package nomaddev

import (
	"fmt"

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

// DockerTemplateHCL is a one-group runner template of one docker task
// sleeping, with extra lines at job, group and task config level: the shape of
// most templates an environment policy has to judge.
func DockerTemplateHCL(jobBody, groupBody, taskConfig string) string {
	return SidecarTemplateHCL(jobBody, groupBody, taskConfig, "")
}

// SidecarTemplateHCL is DockerTemplateHCL with more task blocks (sidecars)
// given whole beside the runner task.
func SidecarTemplateHCL(jobBody, groupBody, taskConfig, sidecars string) string {
	return fmt.Sprintf(`job "template" {
  %s
  group "runner" {
    %s
    task "runner" {
      driver = "docker"
      config {
        image   = "ignored"
        command = "sleep"
        args    = ["infinity"]
        %s
      }
    }
    %s
  }
}`, jobBody, groupBody, taskConfig, sidecars)
}

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
