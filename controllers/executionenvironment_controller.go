package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/internal/runnerphase"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// parallelCreates bounds the runner creations in flight in one reconcile.
const parallelCreates = 8

// ExecutionEnvironmentReconciler keeps each environment's pool: it renders and
// validates the template, creates and deletes Runners per ComputePoolAction, and
// reports the pool in status. It never touches a claimed runner.
type ExecutionEnvironmentReconciler struct {
	client.Client
	Renderer     *Renderer
	Recorder     events.EventRecorder
	Expectations *Expectations
	// CrashLoops rate-limits replacing runners that fail unclaimed (nil: no limit).
	CrashLoops *CrashLoopBackoff
	// Nomad tells whether Nomad answers (nil: assume it does).
	Nomad *NomadHealth
	// MaxCreatesPerPass and MaxSurge tune ComputePoolAction (defaults 50 and 25%).
	MaxCreatesPerPass int
	MaxSurge          int
	// StatusBatch spaces out status writes that only change counts (nil: write each).
	StatusBatch *StatusBatcher

	// created holds, per environment, the runners created since its last
	// SuccessfulCreate event: the event goes out with the next status write.
	createdMu sync.Mutex
	created   map[types.UID][]*v1alpha1.Runner
}

// Reconcile implements reconcile.Reconciler.
func (r *ExecutionEnvironmentReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ee := &v1alpha1.ExecutionEnvironment{}
	if err := r.Get(ctx, req.NamespacedName, ee); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	logger := log.FromContext(ctx).WithValues("ExecutionEnvironment", klog.KObj(ee))
	ctx = log.IntoContext(ctx, logger)

	if ee.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(ee, v1alpha1.EnvironmentFinalizer) {
		patch := client.MergeFrom(ee.DeepCopy())
		controllerutil.AddFinalizer(ee, v1alpha1.EnvironmentFinalizer)
		return reconcile.Result{}, r.Patch(ctx, ee, patch)
	}

	runners, err := r.listRunners(ctx, ee)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !ee.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.reconcileDelete(ctx, ee, runners)
	}

	before := ee.DeepCopy()
	pass, err := r.reconcileNormal(ctx, ee, runners)
	computeStatus(ee, runners, pass.crash, err)
	return r.report(ctx, before, ee, pass.retryAfter, err)
}

// poolPass is what a pass over the pool learned beyond the conditions it set.
type poolPass struct {
	// crash is the environment's crash-loop backoff (zero when not consulted).
	crash CrashLoopStatus
	// retryAfter is when creations the backoff held may go ahead (0: none held).
	retryAfter time.Duration
}

func (r *ExecutionEnvironmentReconciler) reconcileNormal(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, runners []v1alpha1.Runner) (poolPass, error) {
	if err := r.Nomad.Err(); err != nil {
		// Nothing can be created or purged; the probe enqueues every
		// environment again when Nomad answers.
		setNomadCondition(ee, err)
		return poolPass{}, nil
	}
	_, hash, err := r.Renderer.Render(ctx, ee)
	if err != nil {
		invalid, refused := errors.Is(err, nomadbridge.ErrInvalidJob), errors.Is(err, nomadbridge.ErrPolicyViolation)
		if !invalid && !refused {
			setNomadCondition(ee, err)
			return poolPass{}, err
		}
		reason := v1alpha1.ReasonTemplateInvalid
		if refused {
			reason = v1alpha1.ReasonPolicyViolation
		}
		var before metav1.Condition // a copy: setTemplateCondition changes the condition in place
		if c := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.TemplateValidCondition); c != nil {
			before = *c
		}
		setTemplateCondition(ee, err)
		after := meta.FindStatusCondition(ee.Status.Conditions, v1alpha1.TemplateValidCondition)
		if before.Status != metav1.ConditionFalse || before.ObservedGeneration != ee.Generation || before.Message != after.Message {
			r.Recorder.Eventf(ee, nil, corev1.EventTypeWarning, reason, "Render", "%v", err)
		}
		if refused {
			// What runs was made from a job the platform no longer allows:
			// unclaimed runners go; claimed ones stay with their holders.
			return poolPass{}, r.removeUnclaimed(ctx, ee, runners)
		}
		// Only a spec change fixes it; that change triggers a new reconcile.
		return poolPass{}, nil
	}
	setTemplateCondition(ee, nil)
	setNomadCondition(ee, nil)
	ee.Status.TemplateHash = hash

	key := client.ObjectKeyFromObject(ee)
	alive := map[string]bool{}
	for _, rn := range runners {
		alive[rn.Name] = rn.DeletionTimestamp.IsZero()
	}
	inFlight, deleting := r.Expectations.Observe(key, alive)
	in := PoolInput{
		Target:            int(ee.Spec.PrewarmingPoolSize),
		Hash:              hash,
		Runners:           runners,
		Deleting:          deleting,
		InFlightCreates:   inFlight,
		MaxRunners:        ee.RunnerLimit(),
		MaxSurge:          max(r.MaxSurge, int(ee.Spec.PrewarmingPoolSize)/4),
		MaxCreatesPerPass: r.MaxCreatesPerPass,
	}
	var pass poolPass
	if r.CrashLoops != nil {
		pass.crash = r.CrashLoops.Observe(key, in.FailedUnclaimed(), max(1, in.Target))
		in.HoldCreates = pass.crash.Hold > 0
	}
	act := ComputePoolAction(in)

	var errs []error
	for _, rn := range act.Delete {
		errs = append(errs, r.deleteRunner(ctx, ee, rn))
	}
	errs = append(errs, r.createRunners(ctx, ee, hash, act.Create))
	if in.HoldCreates && act.Partial {
		log.FromContext(ctx).Info("Holding runner creations of crash-looping ExecutionEnvironment", "failures", pass.crash.Failures, "backoff", pass.crash.Hold)
		pass.retryAfter = pass.crash.Hold
	}
	return pass, errors.Join(errs...)
}

// report writes the status computeStatus set, unless only counts changed
// and the status batch holds them back, and records the pass's Events: a
// Warning when the environment starts crash-looping, and SuccessfulCreate for
// the runners created since the last status write (it goes out with the
// write, so a held-back write holds it back too). retryAfter asks for the
// next pass; an earlier end of the status hold brings it forward.
func (r *ExecutionEnvironmentReconciler) report(ctx context.Context, before, ee *v1alpha1.ExecutionEnvironment, retryAfter time.Duration, reconcileErr error) (reconcile.Result, error) {
	if msg, ok := crashLoopStarted(&before.Status, &ee.Status); ok {
		r.Recorder.Eventf(ee, nil, corev1.EventTypeWarning, v1alpha1.ReasonRunnersCrashLooping, "Scale", "%s", msg)
	}
	err := reconcileErr
	if equality.Semantic.DeepEqual(before.Status, ee.Status) {
		r.recordCreated(ee)
	} else if hold := r.StatusBatch.Hold(ee.UID, &before.Status, &ee.Status); hold > 0 {
		// Only counts changed and the last write is recent: they are written
		// with the next pass, at the latest when the hold ends.
		if retryAfter == 0 || hold < retryAfter {
			retryAfter = hold
		}
	} else {
		r.recordCreated(ee)
		if perr := r.Status().Patch(ctx, ee, client.MergeFrom(before)); perr != nil && !apierrors.IsNotFound(perr) {
			err = errors.Join(err, fmt.Errorf("write status of environment %s: %w", ee.Name, perr))
		} else {
			r.StatusBatch.Wrote(ee.UID)
		}
	}
	if err != nil {
		// controller-runtime drops RequeueAfter next to an error and retries
		// with its rate limiter instead; that pass consults the backoff and
		// the status batch again, so asking for both would only mislead.
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: retryAfter}, nil
}

func (r *ExecutionEnvironmentReconciler) createRunners(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, hash string, n int) error {
	if n <= 0 {
		return nil
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		created []*v1alpha1.Runner
		sem     = make(chan struct{}, parallelCreates)
	)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rn, err := r.createRunner(ctx, ee, hash)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			created = append(created, rn)
		}()
	}
	wg.Wait()
	if len(created) > 0 {
		r.createdMu.Lock()
		if r.created == nil {
			r.created = map[types.UID][]*v1alpha1.Runner{}
		}
		r.created[ee.UID] = append(r.created[ee.UID], created...)
		r.createdMu.Unlock()
	}
	return errors.Join(errs...)
}

// maxNamesInEvent bounds the runner names one SuccessfulCreate event lists
// (an event's note is at most 1 KiB).
const maxNamesInEvent = 8

// recordCreated records one SuccessfulCreate event for the runners created
// since the last one, as often as the environment's status is written (at
// most once a second while only counts change), not one per runner: a refill
// during a burst of claims would otherwise send an event write per claim, to
// the API server the claims are waiting on.
func (r *ExecutionEnvironmentReconciler) recordCreated(ee *v1alpha1.ExecutionEnvironment) {
	r.createdMu.Lock()
	created := r.created[ee.UID]
	delete(r.created, ee.UID)
	r.createdMu.Unlock()
	switch len(created) {
	case 0:
		return
	case 1:
		rn := created[0]
		r.Recorder.Eventf(ee, rn, corev1.EventTypeNormal, v1alpha1.EventReasonSuccessfulCreate, "Create", "Created runner %s (Nomad job %s)", rn.Name, rn.Annotations[v1alpha1.JobIDAnnotation])
		return
	}
	names := make([]string, 0, maxNamesInEvent)
	for _, rn := range created[:min(len(created), maxNamesInEvent)] {
		names = append(names, rn.Name)
	}
	more := ""
	if extra := len(created) - len(names); extra > 0 {
		more = fmt.Sprintf(" and %d more", extra)
	}
	r.Recorder.Eventf(ee, nil, corev1.EventTypeNormal, v1alpha1.EventReasonSuccessfulCreate, "Create", "Created %d runners: %s%s", len(created), strings.Join(names, ", "), more)
}

func (r *ExecutionEnvironmentReconciler) createRunner(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, hash string) (*v1alpha1.Runner, error) {
	envJob, _, err := r.Renderer.Render(ctx, ee)
	if err != nil {
		return nil, err
	}
	rn := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ee.Name + "-",
			Namespace:    ee.Namespace,
			Labels:       map[string]string{v1alpha1.EnvironmentLabel: ee.Name},
			Annotations: map[string]string{
				v1alpha1.JobIDAnnotation:          nomadbridge.NewRunnerJobID(ee.Name),
				v1alpha1.NomadNamespaceAnnotation: ptr.Deref(envJob.Namespace, ""),
			},
			Finalizers: []string{v1alpha1.RunnerFinalizer},
		},
		Spec: v1alpha1.RunnerSpec{Environment: ee.Name, TemplateHash: hash},
	}
	if err := controllerutil.SetControllerReference(ee, rn, r.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Create(ctx, rn); err != nil {
		r.Recorder.Eventf(ee, nil, corev1.EventTypeWarning, v1alpha1.EventReasonFailedCreate, "Create", "Creating a runner failed: %v", err)
		return nil, fmt.Errorf("create runner of environment %s: %w", ee.Name, err)
	}
	r.Expectations.ExpectCreate(client.ObjectKeyFromObject(ee), rn.Name)
	return rn, nil
}

// deleteRunner deletes an unclaimed runner with a resourceVersion precondition:
// a client that claimed it meanwhile changed its version, so the delete fails
// and the runner survives; the next pass counts it as claimed.
func (r *ExecutionEnvironmentReconciler) deleteRunner(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, rn *v1alpha1.Runner) error {
	if rn == nil {
		return nil
	}
	err := r.Delete(ctx, rn, client.Preconditions{UID: &rn.UID, ResourceVersion: &rn.ResourceVersion})
	switch {
	case apierrors.IsConflict(err):
		log.FromContext(ctx).V(1).Info("Runner changed before its deletion; keeping it", "Runner", klog.KObj(rn))
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete runner %s: %w", rn.Name, err)
	}
	r.Expectations.ExpectDelete(client.ObjectKeyFromObject(ee), rn.Name)
	r.Recorder.Eventf(ee, rn, corev1.EventTypeNormal, v1alpha1.EventReasonSuccessfulDelete, "Delete", "Deleted %s runner %s", rn.Status.Phase, rn.Name)
	return nil
}

// removeUnclaimed deletes every runner of the environment that nobody holds,
// each on the version judged, so that one claimed meanwhile stays.
func (r *ExecutionEnvironmentReconciler) removeUnclaimed(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, runners []v1alpha1.Runner) error {
	var errs []error
	for i := range runners {
		rn := &runners[i]
		if !runnerphase.Counted(rn) || rn.Status.Claim != nil {
			continue
		}
		errs = append(errs, r.deleteRunner(ctx, ee, rn))
	}
	return errors.Join(errs...)
}

// reconcileDelete drains the environment: unclaimed runners go at once,
// claimed ones live until their holders release them (or time out, or fail),
// unless EndClaimsAnnotation says to end them now. The environment stays
// Terminating meanwhile, and its Ready condition says how many claims it waits for.
func (r *ExecutionEnvironmentReconciler) reconcileDelete(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, runners []v1alpha1.Runner) error {
	if !controllerutil.ContainsFinalizer(ee, v1alpha1.EnvironmentFinalizer) {
		return nil
	}
	endClaims := ee.Annotations[v1alpha1.EndClaimsAnnotation] == "true"
	held := 0
	for i := range runners {
		rn := &runners[i]
		if ee.Annotations[v1alpha1.SkipNomadCleanupAnnotation] == "true" && rn.Annotations[v1alpha1.SkipNomadCleanupAnnotation] != "true" {
			patch := client.MergeFrom(rn.DeepCopy())
			metav1.SetMetaDataAnnotation(&rn.ObjectMeta, v1alpha1.SkipNomadCleanupAnnotation, "true")
			if err := r.Patch(ctx, rn, patch); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
		if !rn.DeletionTimestamp.IsZero() {
			continue
		}
		// A claimed runner that failed is of no more use to its holder.
		claimed := rn.Status.Phase == v1alpha1.RunnerClaimed
		if claimed && !endClaims {
			held++
			continue
		}
		// On the version we judged: a runner claimed meanwhile is kept (and
		// waited for) in the next pass.
		err := r.Delete(ctx, rn, client.Preconditions{UID: &rn.UID, ResourceVersion: &rn.ResourceVersion})
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			continue
		case err != nil:
			return fmt.Errorf("delete runner %s: %w", rn.Name, err)
		}
		if claimed {
			r.Recorder.Eventf(ee, rn, corev1.EventTypeWarning, v1alpha1.EventReasonClaimEnded, "Delete",
				"Ended the claim of user %s on runner %s: the environment is deleted with %s=true", rn.Status.Claim.User, rn.Name, v1alpha1.EndClaimsAnnotation)
		}
	}
	if err := r.reportDrain(ctx, ee, held); err != nil {
		return err
	}
	if len(runners) > 0 {
		// Each runner's deletion (its finalizer purging its job) triggers another pass.
		return nil
	}
	r.Expectations.Forget(client.ObjectKeyFromObject(ee))
	if r.CrashLoops != nil {
		r.CrashLoops.Forget(client.ObjectKeyFromObject(ee))
	}
	r.Renderer.Forget(ee.UID)
	r.StatusBatch.Forget(ee.UID)
	r.createdMu.Lock()
	delete(r.created, ee.UID)
	r.createdMu.Unlock()
	patch := client.MergeFrom(ee.DeepCopy())
	controllerutil.RemoveFinalizer(ee, v1alpha1.EnvironmentFinalizer)
	return r.Patch(ctx, ee, patch)
}

// reportDrain writes on a deleting environment how many claimed runners its
// deletion waits for, with an Event when the wait starts.
func (r *ExecutionEnvironmentReconciler) reportDrain(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, held int) error {
	if held == 0 {
		return nil
	}
	before := ee.DeepCopy()
	ee.Status.ClaimedRunners = int32(held)
	ee.Status.IdleRunners, ee.Status.PendingRunners = 0, 0
	msg := fmt.Sprintf("Deleting: waiting for %d claimed runners to be released (annotate %s=true to end them now).", held, v1alpha1.EndClaimsAnnotation)
	setCond(ee, v1alpha1.ReadyCondition, false, v1alpha1.ReasonWaitingForClaims, msg)
	if equality.Semantic.DeepEqual(before.Status, ee.Status) {
		return nil
	}
	if c := meta.FindStatusCondition(before.Status.Conditions, v1alpha1.ReadyCondition); c == nil || c.Reason != v1alpha1.ReasonWaitingForClaims {
		r.Recorder.Eventf(ee, nil, corev1.EventTypeNormal, v1alpha1.ReasonWaitingForClaims, "Delete", "%s", msg)
	}
	if err := r.Status().Patch(ctx, ee, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("write drain status of environment %s: %w", ee.Name, err)
	}
	return nil
}

func (r *ExecutionEnvironmentReconciler) listRunners(ctx context.Context, ee *v1alpha1.ExecutionEnvironment) ([]v1alpha1.Runner, error) {
	list := &v1alpha1.RunnerList{}
	if err := r.List(ctx, list, client.InNamespace(ee.Namespace), client.MatchingLabels{v1alpha1.EnvironmentLabel: ee.Name}); err != nil {
		return nil, fmt.Errorf("list runners of environment %s: %w", ee.Name, err)
	}
	// Only runners this environment controls: a label alone can be copied.
	out := list.Items[:0]
	for _, rn := range list.Items {
		if metav1.IsControlledBy(&rn, ee) {
			out = append(out, rn)
		}
	}
	return out, nil
}

// SetupWithManager registers the controller: it watches environments and the
// runners they own.
func (r *ExecutionEnvironmentReconciler) SetupWithManager(mgr manager.Manager, opts controller.Options) error {
	b := ctrl.ControllerManagedBy(mgr).
		For(&v1alpha1.ExecutionEnvironment{}).
		Owns(&v1alpha1.Runner{}).
		// A policy, or the labels that select a namespace's policies, decide
		// what every environment of a namespace may run.
		Watches(&v1alpha1.EnvironmentPolicy{}, handler.EnqueueRequestsFromMapFunc(r.environmentsIn(""))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.environmentsIn(o.GetName())(ctx, o)
		}), ctrl.WithPredicates(predicate.LabelChangedPredicate{}))
	if r.Nomad != nil {
		b = b.WatchesRawSource(source.Channel(r.Nomad.Changes(), &handler.EnqueueRequestForObject{}))
	}
	return b.WithOptions(opts).
		Named("executionenvironment").
		Complete(r)
}

// environmentsIn maps an event to every environment of a namespace ("" for all).
func (r *ExecutionEnvironmentReconciler) environmentsIn(namespace string) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &v1alpha1.ExecutionEnvironmentList{}
		if err := r.List(ctx, list, client.InNamespace(namespace)); err != nil {
			log.FromContext(ctx).Error(err, "Listing ExecutionEnvironments to check against a changed policy")
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, ee := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ee)})
		}
		return reqs
	}
}

// Selector is the label selector of an environment's runners.
func Selector(ee *v1alpha1.ExecutionEnvironment) string {
	return labels.SelectorFromSet(labels.Set{v1alpha1.EnvironmentLabel: ee.Name}).String()
}
