package controllers

import (
	"context"
	"math/rand/v2"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// OrphanCollector releases Nomad jobs that carry this operator instance's meta
// but whose Runner no longer exists: every job a deleted Runner's finalizer
// stopped (the finalizer only stops, so that no release waits for the tasks to
// end), and jobs left by a crash or an administrator's skip-cleanup. A live
// orphan is stopped on one pass and purged on a later one, once its tasks have
// ended (see nomadbridge.Client.ReleaseRunnerJob). Jobs without our meta are
// never touched. It runs at start and then every Interval, on the leader only.
type OrphanCollector struct {
	Bridge nomadbridge.Client
	// APIReader reads the API server directly: a job is only purged when the
	// server itself says its Runner is gone, never on a stale cache.
	APIReader client.Reader
	Interval  time.Duration
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (o *OrphanCollector) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable.
func (o *OrphanCollector) Start(ctx context.Context) error {
	interval := o.Interval
	if interval == 0 {
		interval = 5 * time.Minute
	}
	for {
		o.Collect(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval + rand.N(interval/5)):
		}
	}
}

// Collect runs one pass and returns the jobs it released (stopped or purged).
func (o *OrphanCollector) Collect(ctx context.Context) []string {
	logger := log.FromContext(ctx).WithName("orphans")
	jobs, err := o.Bridge.ListRunnerJobs(ctx)
	if err != nil {
		logger.Error(err, "Listing runner jobs in Nomad failed")
		return nil
	}
	var released []string
	for _, j := range jobs {
		rn := &v1alpha1.Runner{}
		err := o.APIReader.Get(ctx, types.NamespacedName{Namespace: j.Meta.Namespace, Name: j.Meta.Runner}, rn)
		switch {
		case apierrors.IsNotFound(err):
			rn = nil
		case err != nil:
			logger.Error(err, "Reading the Runner of a Nomad job failed", "nomadJobID", j.ID)
			continue
		}
		if !orphaned(j, rn) {
			continue
		}
		// The listed meta is the owner: the job is released only if Nomad
		// still holds it with that meta when the collector acts.
		if err := o.Bridge.ReleaseRunnerJob(ctx, j.Namespace, j.ID, j.Meta); err != nil {
			logger.Error(err, "Releasing an orphaned Nomad job failed", "nomadJobID", j.ID)
			continue
		}
		if j.Status == "dead" {
			// The usual case: the job a deleted Runner's finalizer stopped.
			logger.V(1).Info("Released stopped Nomad job of a deleted Runner", "nomadJobID", j.ID, "runner", j.Meta.Namespace+"/"+j.Meta.Runner)
		} else {
			logger.Info("Released orphaned Nomad job", "nomadJobID", j.ID, "status", j.Status, "runner", j.Meta.Namespace+"/"+j.Meta.Runner)
		}
		released = append(released, j.ID)
	}
	return released
}

// orphaned tells whether a job of ours has lost its Runner, given rn, the
// Runner its meta names as the API server holds it (nil: there is none). A
// Runner of that name is the job's only if it still names the job and, when
// the job records a Runner UID, is that very object: one recreated under the
// same name, or moved to another job, leaves the job orphaned.
func orphaned(job nomadbridge.JobRef, rn *v1alpha1.Runner) bool {
	if rn == nil {
		return true
	}
	if rn.Annotations[v1alpha1.JobIDAnnotation] != job.ID {
		return true
	}
	return job.Meta.UID != "" && job.Meta.UID != string(rn.UID)
}
