package nomadbridge_test

import (
	"context"
	"errors"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/utils/ptr"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

func rawExecJob(id string, meta map[string]string) *nomad.Job { return nomaddev.SleepJob(id, meta) }

// runnerMeta is the meta of a runner of this suite's instance; its UID is
// derived from the name, so two calls name the same Runner.
func runnerMeta(runner string) nomadbridge.RunnerMeta {
	return nomadbridge.RunnerMeta{Instance: "suite", Namespace: "default", Environment: "python", Runner: runner, UID: "uid-" + runner}
}

func ourMeta(runner string) map[string]string { return runnerMeta(runner).Map() }

// purgeAfter removes a job when the spec ends, whoever's it is, through the
// raw API (cleanup is not what the specs test).
func purgeAfter(jobID string) {
	DeferCleanup(func(ctx context.Context) {
		_, _, err := nomadAPI.Jobs().DeregisterOpts(jobID, &nomad.DeregisterOptions{Purge: true}, (&nomad.WriteOptions{}).WithContext(ctx))
		if err != nil && !strings.Contains(err.Error(), "404") {
			Expect(err).NotTo(HaveOccurred())
		}
	})
}

var _ = Describe("NomadClient against a real agent", func() {
	It("registers a runner job once, runs it, streams its events, refuses a second registration and releases it", func(ctx SpecContext) {
		streamCtx, stopStream := context.WithCancel(ctx)
		defer stopStream()
		events, err := bridge.Events(streamCtx, 0)
		Expect(err).NotTo(HaveOccurred())

		jobID := nomadbridge.NewRunnerJobID("python")
		purgeAfter(jobID)
		Expect(bridge.RegisterRunnerJob(ctx, rawExecJob(jobID, ourMeta("python-abcde")))).To(Succeed())

		By("seeing its allocation running")
		var allocID string
		Eventually(func(g Gomega) {
			allocs, err := bridge.JobAllocations(ctx, "default", jobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
			allocID = allocs[0].ID
		}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

		By("seeing the job's registration and its running allocation on the event stream")
		sawJob, sawRunning := false, false
		Eventually(func() bool {
			for {
				select {
				case batch, ok := <-events:
					if !ok {
						Fail("event stream closed")
					}
					Expect(batch.Err).NotTo(HaveOccurred())
					for _, e := range batch.Events {
						switch e.Topic {
						case nomad.TopicJob:
							if e.Key == jobID {
								sawJob = true
							}
						case nomad.TopicAllocation:
							if e.Key != allocID {
								continue
							}
							alloc, err := e.Allocation()
							Expect(err).NotTo(HaveOccurred())
							Expect(alloc.JobID).To(Equal(jobID))
							if alloc.ClientStatus == nomad.AllocClientStatusRunning {
								sawRunning = true
							}
						}
					}
				default:
					return sawJob && sawRunning
				}
			}
		}).Should(BeTrue())

		By("registering the same ID again with check-index 0")
		again := rawExecJob(jobID, ourMeta("python-abcde"))
		again.TaskGroups[0].Tasks[0].Config["args"] = []string{"7200"}
		err = bridge.RegisterRunnerJob(ctx, again)
		Expect(errors.Is(err, nomadbridge.ErrJobExists)).To(BeTrue(), "got %v", err)

		job, _, err := nomadAPI.Jobs().Info(jobID, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(*job.Version).To(BeZero(), "the refused registration must not have made a new job version")
		Expect(job.TaskGroups[0].Tasks[0].Config["args"]).To(ConsistOf("3600"))
		allocs, err := bridge.JobAllocations(ctx, "default", jobID)
		Expect(err).NotTo(HaveOccurred())
		Expect(allocs).To(HaveLen(1))
		Expect(allocs[0].ID).To(Equal(allocID))

		By("releasing it: the first release stops it")
		Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, runnerMeta("python-abcde"))).To(Succeed())
		job, _, err = nomadAPI.Jobs().Info(jobID, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(*job.Stop).To(BeTrue())

		By("releasing it again once its task ended (the orphan collector's pass): that purges it")
		Eventually(func(g Gomega) {
			g.Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, runnerMeta("python-abcde"))).To(Succeed())
			_, err := bridge.JobAllocations(ctx, "default", jobID)
			g.Expect(errors.Is(err, nomadbridge.ErrJobNotFound)).To(BeTrue(), "got %v", err)
		}).WithContext(ctx).Should(Succeed())
		_, _, err = nomadAPI.Jobs().Info(jobID, nil)
		Expect(err).To(MatchError(ContainSubstring("404")))
		Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, runnerMeta("python-abcde"))).To(Succeed(), "releasing a purged job is not an error")
	}, SpecTimeout(120*time.Second))

	It("lists only the jobs whose meta names this operator instance", func(ctx SpecContext) {
		ours := nomadbridge.NewRunnerJobID("python")
		otherInstance := nomadbridge.NewRunnerJobID("python")
		foreign := "someone-elses-batch-job"
		incomplete := nomadbridge.NewRunnerJobID("python")

		Expect(bridge.RegisterRunnerJob(ctx, rawExecJob(ours, ourMeta("python-aaaaa")))).To(Succeed())
		purgeAfter(ours)

		other, err := nomadbridge.NewClient(nomadAPI, "another-operator")
		Expect(err).NotTo(HaveOccurred())
		otherMeta := nomadbridge.RunnerMeta{Instance: "another-operator", Namespace: "default", Environment: "python", Runner: "python-bbbbb"}.Map()
		Expect(other.RegisterRunnerJob(ctx, rawExecJob(otherInstance, otherMeta))).To(Succeed())
		purgeAfter(otherInstance)

		_, _, err = nomadAPI.Jobs().Register(rawExecJob(foreign, map[string]string{"team": "data"}), nil)
		Expect(err).NotTo(HaveOccurred())
		purgeAfter(foreign)

		// Our instance key alone, without the rest of the meta, is not enough.
		_, _, err = nomadAPI.Jobs().Register(rawExecJob(incomplete, map[string]string{nomadbridge.MetaInstance: "suite"}), nil)
		Expect(err).NotTo(HaveOccurred())
		purgeAfter(incomplete)

		refs, err := bridge.ListRunnerJobs(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(refs).To(ConsistOf(nomadbridge.JobRef{
			Namespace: "default", ID: ours, Status: refs[0].Status,
			Meta: runnerMeta("python-aaaaa"),
		}))

		refs, err = other.ListRunnerJobs(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(refs).To(HaveLen(1))
		Expect(refs[0].ID).To(Equal(otherInstance))
	}, SpecTimeout(60*time.Second))

	It("refuses to register a job that does not carry its meta", func(ctx SpecContext) {
		jobID := nomadbridge.NewRunnerJobID("python")
		err := bridge.RegisterRunnerJob(ctx, rawExecJob(jobID, map[string]string{"team": "data"}))
		Expect(err).To(MatchError(ContainSubstring("does not name operator instance")))
		_, _, err = nomadAPI.Jobs().Info(jobID, nil)
		Expect(err).To(MatchError(ContainSubstring("404")), "nothing may be registered")
	})

	It("parses HCL with Nomad's parser and reports Nomad's own message for bad input", func(ctx SpecContext) {
		job, err := bridge.ParseHCL(ctx, nomaddev.SleepTemplateHCL)
		Expect(err).NotTo(HaveOccurred())
		Expect(*job.ID).To(Equal("template"))
		Expect(job.TaskGroups).To(HaveLen(1))
		Expect(job.TaskGroups[0].Tasks[0].Driver).To(Equal("raw_exec"))

		_, err = bridge.ParseHCL(ctx, `job "broken" { group "g" { task "t" { driver = } } }`)
		Expect(errors.Is(err, nomadbridge.ErrInvalidJob)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("parse job template"))

		By("validating a job Nomad rejects")
		bad := rawExecJob(nomadbridge.NewRunnerJobID("python"), ourMeta("python-ccccc"))
		bad.TaskGroups[0].Tasks[0].Resources.MemoryMB = ptr.To(1)
		err = bridge.ValidateJob(ctx, bad)
		Expect(errors.Is(err, nomadbridge.ErrInvalidJob)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("MemoryMB"))

		Expect(bridge.ValidateJob(ctx, rawExecJob(nomadbridge.NewRunnerJobID("python"), ourMeta("python-ddddd")))).To(Succeed())
	})
})

var _ = Describe("Rendered runner jobs on a real agent", func() {
	It("renders the sample's HCL template into a job Nomad accepts and runs", func(ctx SpecContext) {
		template, err := bridge.ParseHCL(ctx, nomaddev.SleepTemplateHCL)
		Expect(err).NotTo(HaveOccurred())
		envJob, err := nomadbridge.RenderEnvironmentJob(template, nomadbridge.EnvironmentSpec{Image: "python:3.13", CPU: 50, MemoryMB: 32})
		Expect(err).NotTo(HaveOccurred())
		Expect(bridge.ValidateJob(ctx, envJob)).To(Succeed())

		jobID := nomadbridge.NewRunnerJobID("python")
		purgeAfter(jobID)
		job := nomadbridge.ForRunner(envJob, jobID, runnerMeta("python-rendered"))
		Expect(bridge.RegisterRunnerJob(ctx, job)).To(Succeed())
		Eventually(func(g Gomega) {
			allocs, err := bridge.JobAllocations(ctx, "default", jobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
		}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

		stored, _, err := nomadAPI.Jobs().Info(jobID, nil)
		Expect(err).NotTo(HaveOccurred())
		task := stored.TaskGroups[0].Tasks[0]
		Expect(task.KillSignal).To(Equal("SIGKILL"))
		Expect(*task.Resources.MemoryMB).To(Equal(32))
		Expect(*stored.TaskGroups[0].RestartPolicy.Attempts).To(BeZero())
		Expect(stored.Meta).To(HaveKeyWithValue(nomadbridge.MetaRunner, "python-rendered"))
		// Registered once, never updated: no deployment to watch (or to cancel on purge).
		Expect(*stored.TaskGroups[0].Update.MaxParallel).To(BeZero())
		deployments, _, err := nomadAPI.Jobs().Deployments(jobID, false, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(deployments).To(BeEmpty())
	}, SpecTimeout(90*time.Second))

	It("renders the default docker template into a job Nomad validates", func(ctx SpecContext) {
		envJob, err := nomadbridge.RenderEnvironmentJob(nomadbridge.DefaultTemplate(),
			nomadbridge.EnvironmentSpec{Image: "python:3.13", CPU: 100, MemoryMB: 128, NetworkAccess: true, ExposedPorts: []int{8080}})
		Expect(err).NotTo(HaveOccurred())
		Expect(bridge.ValidateJob(ctx, nomadbridge.ForRunner(envJob, nomadbridge.NewRunnerJobID("python"), runnerMeta("python-docker")))).To(Succeed())
	})
})
