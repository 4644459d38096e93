package nomadbridge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// The runner every spec below acts as: what its Runner object says it is.
const victimRunner = "python-victim"

func withoutUID(m nomadbridge.RunnerMeta) nomadbridge.RunnerMeta {
	m.UID = ""
	return m
}

// foreignJobs are jobs a Runner named victimRunner must never adopt or
// release, with a word the ErrNotOurJob message must carry to say whose it is.
func foreignJobs() []TableEntry {
	otherInstance := runnerMeta(victimRunner)
	otherInstance.Instance = "another-operator"
	otherUID := runnerMeta(victimRunner)
	otherUID.UID = "uid-of-an-earlier-runner-of-that-name"
	return []TableEntry{
		Entry("a job without runner meta", map[string]string{"team": "payments"}, "no runner meta", SpecTimeout(30*time.Second)),
		Entry("a job of another operator instance", otherInstance.Map(), `instance "another-operator"`, SpecTimeout(30*time.Second)),
		Entry("a job of another runner of this instance", ourMeta("python-someone-else"), "default/python-someone-else", SpecTimeout(30*time.Second)),
		Entry("a job of an earlier Runner of the same name (another UID)", otherUID.Map(), otherUID.UID, SpecTimeout(30*time.Second)),
		Entry("a job of the same name registered without UID", withoutUID(runnerMeta(victimRunner)).Map(), "default/"+victimRunner, SpecTimeout(30*time.Second)),
	}
}

// registerForeign registers a job directly (as its owner would) and returns
// it as Nomad stores it.
func registerForeign(ctx context.Context, jobID string, meta map[string]string) *nomad.Job {
	GinkgoHelper()
	_, _, err := nomadAPI.Jobs().Register(rawExecJob(jobID, meta), (&nomad.WriteOptions{}).WithContext(ctx))
	Expect(err).NotTo(HaveOccurred())
	purgeAfter(jobID)
	job, _, err := nomadAPI.Jobs().Info(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
	Expect(err).NotTo(HaveOccurred())
	return job
}

// expectUnchanged checks that Nomad holds job as it was: not purged, not
// stopped, no new version.
func expectUnchanged(ctx context.Context, before *nomad.Job) {
	GinkgoHelper()
	after, _, err := nomadAPI.Jobs().Info(*before.ID, (&nomad.QueryOptions{}).WithContext(ctx))
	Expect(err).NotTo(HaveOccurred(), "the foreign job must survive")
	Expect(*after.JobModifyIndex).To(Equal(*before.JobModifyIndex))
	Expect(*after.Version).To(Equal(*before.Version))
	Expect(*after.Stop).To(BeFalse())
	Expect(after.Meta).To(Equal(before.Meta))
	Expect(after.TaskGroups[0].Tasks[0].Config["args"]).To(Equal(before.TaskGroups[0].Tasks[0].Config["args"]))
}

var _ = Describe("Only a runner's own job is released or adopted", func() {
	DescribeTable("a foreign job survives ReleaseRunnerJob",
		func(ctx SpecContext, meta map[string]string, whose string) {
			jobID := "payments-api-" + uuid.NewString()[:8]
			before := registerForeign(ctx, jobID, meta)

			err := bridge.ReleaseRunnerJob(ctx, "default", jobID, runnerMeta(victimRunner))
			Expect(errors.Is(err, nomadbridge.ErrNotOurJob)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring(whose))
			expectUnchanged(ctx, before)
		},
		foreignJobs(),
	)

	DescribeTable("registering a runner job whose ID is a foreign job's returns ErrNotOurJob and changes nothing",
		func(ctx SpecContext, meta map[string]string, whose string) {
			jobID := nomadbridge.NewRunnerJobID("python")
			before := registerForeign(ctx, jobID, meta)

			ours := rawExecJob(jobID, ourMeta(victimRunner))
			ours.TaskGroups[0].Tasks[0].Config["args"] = []string{"7200"}
			err := bridge.RegisterRunnerJob(ctx, ours)
			Expect(errors.Is(err, nomadbridge.ErrNotOurJob)).To(BeTrue(), "got %v", err)
			Expect(errors.Is(err, nomadbridge.ErrJobExists)).To(BeFalse(), "a foreign job must not read as ours")
			Expect(err.Error()).To(ContainSubstring(whose))
			expectUnchanged(ctx, before)
		},
		foreignJobs(),
	)

	It("releases a job registered without UID only for the meta the orphan collector listed", func(ctx SpecContext) {
		legacy := withoutUID(runnerMeta(victimRunner))
		jobID := nomadbridge.NewRunnerJobID("python")
		registerForeign(ctx, jobID, legacy.Map())

		refs, err := bridge.ListRunnerJobs(ctx)
		Expect(err).NotTo(HaveOccurred())
		var listed *nomadbridge.JobRef
		for i := range refs {
			if refs[i].ID == jobID {
				listed = &refs[i]
			}
		}
		Expect(listed).NotTo(BeNil(), "a job without UID is still listed as ours")
		Expect(listed.Meta).To(Equal(legacy))

		By("stopping it on the first pass, purging it on a later one")
		Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, listed.Meta)).To(Succeed())
		stopped, _, err := nomadAPI.Jobs().Info(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
		Expect(err).NotTo(HaveOccurred())
		Expect(*stopped.Stop).To(BeTrue())
		Eventually(func(g Gomega) {
			g.Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, listed.Meta)).To(Succeed())
			_, _, err := nomadAPI.Jobs().Info(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
			g.Expect(err).To(MatchError(ContainSubstring("404")))
		}).WithContext(ctx).Should(Succeed())
	}, SpecTimeout(60*time.Second))

	It("refuses to release for an owner of another operator instance", func(ctx SpecContext) {
		other := runnerMeta(victimRunner)
		other.Instance = "another-operator"
		jobID := nomadbridge.NewRunnerJobID("python")
		before := registerForeign(ctx, jobID, other.Map())

		err := bridge.ReleaseRunnerJob(ctx, "default", jobID, other)
		Expect(errors.Is(err, nomadbridge.ErrNotOurJob)).To(BeTrue(), "got %v", err)
		expectUnchanged(ctx, before)
	}, SpecTimeout(30*time.Second))
})

// sleepMarker is a sleep duration unique to one task, so its process is
// found by its command line: `sleep 3600.<digits>`.
func sleepMarker() string { return fmt.Sprintf("3600.%09d", rand.N(1_000_000_000)) }

// shRunnerJob is a runner job whose task is a shell that execs sleep, as a
// runner's entrypoint would exec the code it runs.
func shRunnerJob(jobID, runner, marker string) *nomad.Job {
	job := rawExecJob(jobID, ourMeta(runner))
	job.TaskGroups[0].Tasks[0].Config = map[string]any{
		"command": "/bin/sh",
		"args":    []string{"-c", "exec sleep " + marker},
	}
	return job
}

// processOf returns the pid of the live process whose command line is
// `sleep <marker>`, or 0.
func processOf(marker string) int {
	entries, err := os.ReadDir("/proc")
	Expect(err).NotTo(HaveOccurred())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if running(pid, marker) {
			return pid
		}
	}
	return 0
}

// running tells whether pid is a live (not zombie) `sleep <marker>`.
func running(pid int, marker string) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(cmdline) == 0 {
		return false // gone, or a zombie (its cmdline is empty)
	}
	return strings.Join(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), " ") == "sleep "+marker
}

var _ = Describe("Releasing a runner", func() {
	It("purges at once a job whose task already ended: nothing runs in it", func(ctx SpecContext) {
		jobID := nomadbridge.NewRunnerJobID("python")
		purgeAfter(jobID)
		job := rawExecJob(jobID, ourMeta("python-ended"))
		job.TaskGroups[0].Tasks[0].Config = map[string]any{"command": "/bin/true"}
		Expect(bridge.RegisterRunnerJob(ctx, job)).To(Succeed())
		Eventually(func(g Gomega) {
			stored, _, err := nomadAPI.Jobs().Info(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(*stored.Status).To(Equal("dead"))
			allocs, err := bridge.JobAllocations(ctx, "default", jobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			// A service task that exits is failed, whatever its exit code: terminal either way.
			g.Expect(allocs[0].ClientStatus).To(BeElementOf(nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed))
		}).WithContext(ctx).WithTimeout(60 * time.Second).Should(Succeed())

		Expect(bridge.ReleaseRunnerJob(ctx, "default", jobID, runnerMeta("python-ended"))).To(Succeed())
		_, _, err := nomadAPI.Jobs().Info(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
		Expect(err).To(MatchError(ContainSubstring("404")))
	}, SpecTimeout(90*time.Second))

	It("ends the code running in it, also when many are released together", func(ctx SpecContext) {
		const runners = 12
		type task struct {
			jobID, runner, marker string
			pid                   int
		}
		tasks := make([]*task, runners)
		for i := range tasks {
			t := &task{jobID: nomadbridge.NewRunnerJobID("python"), runner: fmt.Sprintf("python-release-%d", i), marker: sleepMarker()}
			tasks[i] = t
			purgeAfter(t.jobID)
			Expect(bridge.RegisterRunnerJob(ctx, shRunnerJob(t.jobID, t.runner, t.marker))).To(Succeed())
		}
		By("finding every task's process")
		Eventually(func(g Gomega) {
			for _, t := range tasks {
				if t.pid == 0 {
					t.pid = processOf(t.marker)
				}
				g.Expect(t.pid).NotTo(BeZero(), "process of %s", t.jobID)
			}
		}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())

		By("releasing them, four at a time like the controller's workers")
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		errs := make([]error, runners)
		for i, t := range tasks {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				errs[i] = bridge.ReleaseRunnerJob(ctx, "default", t.jobID, runnerMeta(t.runner))
			})
		}
		wg.Wait()
		for i, err := range errs {
			Expect(err).NotTo(HaveOccurred(), "release of %s", tasks[i].jobID)
		}

		By("seeing every process end")
		Eventually(func(g Gomega) {
			for _, t := range tasks {
				g.Expect(running(t.pid, t.marker)).To(BeFalse(), "process %d of %s still runs", t.pid, t.jobID)
			}
		}).WithContext(ctx).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

		By("releasing them again, as the orphan collector does: every job is purged once its task ended")
		Eventually(func(g Gomega) {
			for _, t := range tasks {
				g.Expect(bridge.ReleaseRunnerJob(ctx, "default", t.jobID, runnerMeta(t.runner))).To(Succeed())
				_, _, err := nomadAPI.Jobs().Info(t.jobID, (&nomad.QueryOptions{}).WithContext(ctx))
				g.Expect(err).To(MatchError(ContainSubstring("404")), "job %s", t.jobID)
			}
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	}, SpecTimeout(180*time.Second))
})
