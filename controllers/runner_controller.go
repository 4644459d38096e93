package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

const (
	// jobIDIndex indexes Runners by Nomad job ID, for mapping Nomad events.
	jobIDIndex = "nomadJobID"
	// conflictRetry is how soon a status write that lost to a newer version is retried.
	conflictRetry = 200 * time.Millisecond
	// staleRetry is how soon a reconcile that found the cache behind our own
	// last write looks again (the write's watch event usually comes first).
	staleRetry = 250 * time.Millisecond
)

// RunnerReconciler owns one runner's Nomad job: registers it, maps its
// allocation to the runner's phase, enforces the claim's inactivity timeout and
// purges the job when the runner is deleted.
type RunnerReconciler struct {
	client.Client
	Bridge   nomadbridge.Client
	Renderer *Renderer
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// NomadEvents carries runners to reconcile because Nomad said something
	// about their job (see NomadEventSource).
	NomadEvents <-chan event.GenericEvent
	// Store, filled by the event source's Watcher, answers what Nomad says
	// about a job without a read per runner (nil: always read Nomad).
	Store *nomadbridge.JobStore

	// ownWrites remembers, per runner, the resourceVersion our last status
	// write replaced: a cache still showing it is behind our own write.
	ownWrites sync.Map // types.NamespacedName → string
}

// Reconcile implements reconcile.Reconciler.
func (r *RunnerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	runner := &v1alpha1.Runner{}
	if err := r.Get(ctx, req.NamespacedName, runner); err != nil {
		if apierrors.IsNotFound(err) {
			r.ownWrites.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.cacheBehindOwnWrite(req.NamespacedName, runner) {
		// Working on this copy would send a write the API server refuses
		// (optimistic lock) or register a job twice: wait for the cache.
		return ctrl.Result{RequeueAfter: staleRetry}, nil
	}
	logger := log.FromContext(ctx).WithValues("Runner", klog.KObj(runner), "nomadJobID", runner.Annotations[v1alpha1.JobIDAnnotation])
	ctx = log.IntoContext(ctx, logger)

	if why := notMadeByUs(runner); why != "" {
		return ctrl.Result{}, r.leaveAlone(ctx, runner, why)
	}
	if !runner.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, runner)
	}
	return r.reconcileNormal(ctx, runner)
}

// notMadeByUs tells why a Runner is not one the environment controller made
// ("" when it is): it must be controlled by the ExecutionEnvironment its spec
// names and carry a job ID of that environment's form. Such a Runner's
// annotations could name any Nomad job; it is never registered, adopted or
// purged. (The shipped admission policies already refuse Runners made by
// anyone but the operator; this holds where they are not installed.)
func notMadeByUs(runner *v1alpha1.Runner) string {
	ref := metav1.GetControllerOf(runner)
	if ref == nil || ref.Kind != "ExecutionEnvironment" || ref.APIVersion != v1alpha1.GroupVersion.String() || ref.Name != runner.Spec.Environment {
		return fmt.Sprintf("it is not controlled by ExecutionEnvironment %s", runner.Spec.Environment)
	}
	jobID := runner.Annotations[v1alpha1.JobIDAnnotation]
	if env, _, ok := nomadbridge.ParseRunnerJobID(jobID); !ok || env != runner.Spec.Environment {
		return fmt.Sprintf("its Nomad job ID %q is not one the operator makes for environment %s", jobID, runner.Spec.Environment)
	}
	return ""
}

// leaveAlone touches nothing of a Runner the operator did not make but its
// own finalizer, which it removes from a deleting one so the deletion ends,
// and says so in an Event.
func (r *RunnerReconciler) leaveAlone(ctx context.Context, runner *v1alpha1.Runner, why string) error {
	if !controllerutil.ContainsFinalizer(runner, v1alpha1.RunnerFinalizer) {
		return nil
	}
	if runner.DeletionTimestamp.IsZero() {
		r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.ReasonNotManaged, "Ignore",
			"Runner was not made by the operator (%s); no Nomad job is registered, adopted or purged for it", why)
		return nil
	}
	log.FromContext(ctx).Info("Releasing the finalizer of a Runner the operator did not make; no Nomad job is touched", "why", why)
	r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.ReasonNotManaged, "Delete",
		"Runner was not made by the operator (%s); its deletion purges no Nomad job", why)
	patch := client.MergeFrom(runner.DeepCopy())
	controllerutil.RemoveFinalizer(runner, v1alpha1.RunnerFinalizer)
	if err := r.Patch(ctx, runner, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer of runner %s: %w", runner.Name, err)
	}
	return nil
}

func (r *RunnerReconciler) reconcileDelete(ctx context.Context, runner *v1alpha1.Runner) error {
	if !controllerutil.ContainsFinalizer(runner, v1alpha1.RunnerFinalizer) {
		return nil
	}
	jobID := runner.Annotations[v1alpha1.JobIDAnnotation]
	if runner.Annotations[v1alpha1.SkipNomadCleanupAnnotation] == "true" {
		log.FromContext(ctx).Info("Skipping Nomad cleanup of Runner on request", "annotation", v1alpha1.SkipNomadCleanupAnnotation)
	} else if jobID != "" {
		owner := nomadbridge.RunnerMeta{
			Instance: r.Bridge.Instance(), Namespace: runner.Namespace, Environment: runner.Spec.Environment,
			Runner: runner.Name, UID: string(runner.UID),
		}
		err := r.Bridge.ReleaseRunnerJob(ctx, runner.Annotations[v1alpha1.NomadNamespaceAnnotation], jobID, owner)
		if errors.Is(err, nomadbridge.ErrNotOurJob) {
			// The annotations name a job this Runner did not register: it
			// survives, and the Runner goes without touching it.
			r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.EventReasonForeignNomadJob, "Delete",
				"Not purging Nomad job %s: %v", jobID, err)
			err = nil
		}
		if err != nil {
			r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.EventReasonFailedPurge, "Delete",
				"Purging Nomad job %s failed (retrying; annotate %s=true to skip): %v", jobID, v1alpha1.SkipNomadCleanupAnnotation, err)
			// Say why the deletion waits where `kubectl describe` shows it; the
			// error makes the controller retry with exponential backoff.
			return errors.Join(err, r.setPurgeCondition(ctx, runner, err))
		}
	}
	patch := client.MergeFrom(runner.DeepCopy())
	controllerutil.RemoveFinalizer(runner, v1alpha1.RunnerFinalizer)
	// NotFound: a pass on a cache behind our own removal; the runner is gone.
	if err := r.Patch(ctx, runner, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer of runner %s: %w", runner.Name, err)
	}
	return nil
}

// setPurgeCondition records on a deleting runner that its Nomad job could not
// be purged yet, and how an administrator can end the wait.
func (r *RunnerReconciler) setPurgeCondition(ctx context.Context, runner *v1alpha1.Runner, purgeErr error) error {
	before := runner.DeepCopy()
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: v1alpha1.NomadJobPurgedCondition, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonPurgeFailed,
		ObservedGeneration: runner.Generation,
		Message: fmt.Sprintf("Deletion waits for Nomad job %s to be purged: %v. Retrying with backoff; annotate %s=true to skip the cleanup.",
			runner.Annotations[v1alpha1.JobIDAnnotation], purgeErr, v1alpha1.SkipNomadCleanupAnnotation),
	})
	boundRunnerStatus(&runner.Status)
	if equality.Semantic.DeepEqual(before.Status, runner.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, runner, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("write purge condition of runner %s: %w", runner.Name, err)
	}
	return nil
}

// reconcileNormal reads what the runner's status depends on, computes the
// status from it (computeRunnerStatus) and acts on the decision: events and
// metrics, one status write, the deletion of a runner whose claim lapsed.
func (r *RunnerReconciler) reconcileNormal(ctx context.Context, runner *v1alpha1.Runner) (ctrl.Result, error) {
	o, registered, err := r.observe(ctx, runner)
	if err != nil || !registered {
		return ctrl.Result{}, err
	}
	d := computeRunnerStatus(o)

	before := runner.DeepCopy()
	runner.Status = d.Status
	if d.ReadPorts {
		if err := r.observePorts(ctx, runner); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.report(ctx, runner, before.Status.Phase, d)
	if d.WriteIn > 0 {
		// Nothing a user acts on yet: write once the runner is Idle, has a
		// reason to show, or is still Pending when the quiet period ends.
		wait := d.WriteIn
		if d.AskNomadIn > 0 {
			wait = min(wait, d.AskNomadIn)
		}
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.writeStatus(ctx, runner, before); err != nil {
		if apierrors.IsConflict(err) {
			metrics.ClaimConflicts.Inc()
			// We worked on a stale copy (a claim, a renewal or our own last write
			// is newer). Look again shortly, on the fresh copy: the newer version's
			// watch event may be one the predicate filters out.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}
	if d.ClaimExpired {
		return ctrl.Result{}, r.deleteInactive(ctx, runner)
	}
	return ctrl.Result{RequeueAfter: d.ClaimExpiresIn}, nil
}

// observe reads what the runner's status is computed from. It registers the
// runner's job first when the status names none yet (false: not now, see
// register), then reads the job's allocations and, when due, why Nomad does
// not place it. A Failed runner stays Failed: Nomad is not read for it.
func (r *RunnerReconciler) observe(ctx context.Context, runner *v1alpha1.Runner) (runnerObservation, bool, error) {
	o := runnerObservation{
		Status: runner.Status, Generation: runner.Generation,
		JobID: runner.Annotations[v1alpha1.JobIDAnnotation], Namespace: runner.Annotations[v1alpha1.NomadNamespaceAnnotation],
		Created: runner.CreationTimestamp.Time, Now: r.Clock.Now(),
	}
	if needsRegistration(runner.Status) {
		if registered, err := r.register(ctx, runner); err != nil || !registered {
			return o, false, err
		}
	}
	if runner.Status.Phase == v1alpha1.RunnerFailed {
		return o, true, nil
	}
	allocs, err := r.jobAllocations(ctx, o.Namespace, o.JobID)
	switch {
	case errors.Is(err, nomadbridge.ErrJobNotFound):
		o.JobGone = true
	case err != nil:
		return o, false, err
	default:
		o.Allocations = allocs
	}
	if askWhyUnplaced(o) {
		why, err := r.Bridge.PlacementFailure(ctx, o.Namespace, o.JobID)
		if err != nil {
			return o, false, err
		}
		o.WhyUnplaced = &why
	}
	return o, true, nil
}

// report tells users and operators what a decision changed: its Event, a log
// line for a new phase and, for a runner turning Idle, how long it took.
func (r *RunnerReconciler) report(ctx context.Context, runner *v1alpha1.Runner, was v1alpha1.RunnerPhase, d runnerDecision) {
	if e := d.Event; e != nil {
		r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, e.Reason, e.Action, "%s", e.Note)
	}
	if was == d.Status.Phase {
		return
	}
	log.FromContext(ctx).Info("Runner changed phase", "from", was, "to", d.Status.Phase, "reason", d.Status.Reason)
	if d.Status.Phase == v1alpha1.RunnerIdle {
		metrics.RunnerStartup.WithLabelValues(runner.Namespace, runner.Spec.Environment).
			Observe(r.Clock.Since(runner.CreationTimestamp.Time).Seconds())
	}
}

// jobAllocations answers from the Store when it knows the job, and reads Nomad
// otherwise (stream down, a job it has not seen yet, a deregistered job): a
// store miss is never taken for a lost job.
func (r *RunnerReconciler) jobAllocations(ctx context.Context, namespace, jobID string) ([]*nomad.AllocationListStub, error) {
	if r.Store != nil {
		if allocs, ok := r.Store.Allocations(jobID); ok {
			return allocs, nil
		}
	}
	return r.Bridge.JobAllocations(ctx, namespace, jobID)
}

func (r *RunnerReconciler) observePorts(ctx context.Context, runner *v1alpha1.Runner) error {
	var ports []nomad.PortMapping
	ok := false
	if r.Store != nil {
		ports, ok = r.Store.Ports(runner.Status.NomadJobID, runner.Status.AllocationID)
	}
	if !ok {
		var err error
		if ports, err = r.Bridge.AllocationPorts(ctx, runner.Status.NomadNamespace, runner.Status.AllocationID); err != nil {
			return err
		}
	}
	runner.Status.Ports, runner.Status.Address = nil, ""
	for _, p := range ports {
		runner.Status.Ports = append(runner.Status.Ports, v1alpha1.RunnerPort{
			Label: p.Label, HostIP: p.HostIP, Port: int32(p.Value), To: int32(p.To),
		})
		runner.Status.Address = p.HostIP
	}
	return nil
}

// register registers the runner's job; false means "not now" (the environment
// is gone, or its template changed since the runner was made: the environment
// controller replaces such a runner).
func (r *RunnerReconciler) register(ctx context.Context, runner *v1alpha1.Runner) (bool, error) {
	if r.Store != nil && r.Store.KnownAs(runner.Annotations[v1alpha1.JobIDAnnotation], string(runner.UID)) {
		// Registered already: a reconcile on a cache that does not show our
		// Pending write yet. Another registration would be a wasted Nomad write.
		return true, nil
	}
	ee := &v1alpha1.ExecutionEnvironment{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runner.Spec.Environment}, ee); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(runner, ee) {
		// Made by an environment of that name that is gone (or forged): the
		// environment of today never asked for it.
		return false, nil
	}
	envJob, hash, err := r.Renderer.Render(ctx, ee)
	if err != nil {
		if errors.Is(err, nomadbridge.ErrInvalidJob) || errors.Is(err, nomadbridge.ErrPolicyViolation) {
			return false, nil // the environment reports it
		}
		return false, err
	}
	if hash != runner.Spec.TemplateHash {
		return false, nil
	}
	jobID := runner.Annotations[v1alpha1.JobIDAnnotation]
	job := nomadbridge.ForRunner(envJob, jobID, nomadbridge.RunnerMeta{
		Instance: r.Bridge.Instance(), Namespace: runner.Namespace, Environment: runner.Spec.Environment, Runner: runner.Name,
		UID: string(runner.UID),
	})
	err = r.Bridge.RegisterRunnerJob(ctx, job)
	if errors.Is(err, nomadbridge.ErrNotOurJob) {
		// Its job ID names someone else's job: never adopt it. Retrying
		// cannot change whose job it is, so no error (no hot loop).
		r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.EventReasonForeignNomadJob, "Register",
			"Not registering or adopting Nomad job %s: %v", jobID, err)
		return false, nil
	}
	if (err == nil || errors.Is(err, nomadbridge.ErrJobExists)) && r.Store != nil {
		r.Store.Registered(jobID, string(runner.UID))
	}
	// No Normal event for a registration: the environment's SuccessfulCreate
	// names the job already, and one more API write per runner would slow
	// every fill and refill.
	switch {
	case errors.Is(err, nomadbridge.ErrJobExists):
		log.FromContext(ctx).Info("Nomad job of Runner was already registered")
	case err != nil:
		r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, v1alpha1.EventReasonFailedRegister, "Register", "Registering Nomad job %s failed: %v", jobID, err)
		return false, err
	}
	return true, nil
}

// deleteInactive deletes a claimed (or failed, claimed) runner whose holder
// stopped renewing.
func (r *RunnerReconciler) deleteInactive(ctx context.Context, runner *v1alpha1.Runner) error {
	c := runner.Status.Claim
	log.FromContext(ctx).Info("Deleting Runner after claim inactivity", "holder", c.Holder, "lastActivity", lastActivity(c))
	r.Recorder.Eventf(runner, nil, corev1.EventTypeNormal, v1alpha1.ReasonInactivityTimeout, "Delete",
		"Holder %s did not renew the claim for %ds; deleting the runner", c.Holder, c.InactivityTimeoutSeconds)
	// Precondition on the version we judged: a renewal meanwhile wins.
	err := r.Delete(ctx, runner, client.Preconditions{UID: &runner.UID, ResourceVersion: &runner.ResourceVersion})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// writeStatus patches the fields this controller owns, with an optimistic lock:
// if a client claimed or renewed the runner since it was read, the patch fails
// with a conflict and the reconcile runs again on fresh data. A claim is never
// overwritten. A phase change is this one write: claimers select on the phase
// field itself (the CRD's selectableFields), there is no label to keep in step.
func (r *RunnerReconciler) writeStatus(ctx context.Context, runner, before *v1alpha1.Runner) error {
	boundRunnerStatus(&runner.Status)
	if equality.Semantic.DeepEqual(before.Status, runner.Status) {
		return nil
	}
	replaced := runner.ResourceVersion
	if err := r.Status().Patch(ctx, runner, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("write status of runner %s: %w", runner.Name, err)
	}
	r.ownWrites.Store(client.ObjectKeyFromObject(runner), replaced)
	return nil
}

// cacheBehindOwnWrite tells whether the cached runner is still the version our
// last status write replaced. Alloc events often reach the runner right after
// our Pending write, before the cache shows it: without this check each such
// reconcile costs a status write refused with a conflict.
func (r *RunnerReconciler) cacheBehindOwnWrite(key types.NamespacedName, cached *v1alpha1.Runner) bool {
	replaced, ok := r.ownWrites.Load(key)
	if !ok {
		return false
	}
	if replaced.(string) == cached.ResourceVersion {
		return true
	}
	r.ownWrites.Delete(key) // the cache has caught up (or someone wrote since)
	return false
}

// runnerChangeMatters filters Runner updates down to those that need the
// runner's Nomad state looked at again: our own status writes would
// otherwise each cost one more reconcile (and, on a job-store miss, one more
// Nomad read). A periodic resync (same resourceVersion) always passes.
func runnerChangeMatters(e event.UpdateEvent) bool {
	o, okOld := e.ObjectOld.(*v1alpha1.Runner)
	n, okNew := e.ObjectNew.(*v1alpha1.Runner)
	if !okOld || !okNew {
		return true
	}
	return o.ResourceVersion == n.ResourceVersion ||
		o.Generation != n.Generation ||
		!n.DeletionTimestamp.IsZero() ||
		o.Status.Phase != n.Status.Phase ||
		!equality.Semantic.DeepEqual(o.Status.Claim, n.Status.Claim) ||
		!equality.Semantic.DeepEqual(o.Annotations, n.Annotations)
}

// countClaims counts a runner turning from Idle to Claimed. It sees every update
// the leader's informer delivers, so each claim is counted once per leader; it
// filters nothing.
func countClaims(e event.UpdateEvent) bool {
	o, okOld := e.ObjectOld.(*v1alpha1.Runner)
	n, okNew := e.ObjectNew.(*v1alpha1.Runner)
	if okOld && okNew && o.Status.Phase == v1alpha1.RunnerIdle && n.Status.Phase == v1alpha1.RunnerClaimed {
		metrics.Claims.WithLabelValues(n.Namespace, n.Spec.Environment).Inc()
	}
	return true
}

// SetupWithManager registers the controller, the job-ID index and the Nomad
// event channel.
func (r *RunnerReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.Runner{}, jobIDIndex, func(o client.Object) []string {
		if id := o.GetAnnotations()[v1alpha1.JobIDAnnotation]; id != "" {
			return []string{id}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("index runners by nomad job id: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Runner{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: countClaims}, predicate.Funcs{UpdateFunc: runnerChangeMatters})).
		WithOptions(opts).
		Named("runner")
	if r.NomadEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.NomadEvents, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}
