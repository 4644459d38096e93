package controllers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/internal/runnerphase"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// computeStatus counts the runners, sets PoolFilled (RunnersCrashLooping
// while crash says replacements wait for the backoff) and Ready, and stamps
// the observed generation when the pass went through.
func computeStatus(ee *v1alpha1.ExecutionEnvironment, runners []v1alpha1.Runner, crash CrashLoopStatus, reconcileErr error) {
	c := runnerphase.CountByPhase(runners)
	s := &ee.Status
	s.IdleRunners, s.ClaimedRunners, s.PendingRunners, s.FailedRunners = int32(c.Idle), int32(c.Claimed), int32(c.Pending), int32(c.Failed)
	s.Selector = Selector(ee)
	setPoolFilledCondition(ee, c.WaitingForNomad, c.AgainstLimit())
	setCrashLoopCondition(ee, crash)
	setReadyCondition(ee)
	if reconcileErr == nil {
		s.ObservedGeneration = ee.Generation
	}
}

func setCond(ee *v1alpha1.ExecutionEnvironment, t string, ok bool, reason, message string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&ee.Status.Conditions, metav1.Condition{
		Type: t, Status: status, Reason: cut(reason, maxConditionReasonLen), Message: truncate(message, maxConditionMessageLen),
		ObservedGeneration: ee.Generation,
	})
}

func setTemplateCondition(ee *v1alpha1.ExecutionEnvironment, err error) {
	if errors.Is(err, nomadbridge.ErrPolicyViolation) {
		msg := err.Error()
		setCond(ee, v1alpha1.TemplateValidCondition, false, v1alpha1.ReasonPolicyViolation, strings.ToUpper(msg[:1])+msg[1:]+".")
		return
	}
	if err != nil {
		msg := err.Error()
		if i := strings.Index(msg, nomadbridge.ErrInvalidJob.Error()+": "); i >= 0 {
			msg = msg[i+len(nomadbridge.ErrInvalidJob.Error())+2:]
		}
		setCond(ee, v1alpha1.TemplateValidCondition, false, v1alpha1.ReasonTemplateInvalid, "Nomad rejected the runner job: "+msg)
		return
	}
	setCond(ee, v1alpha1.TemplateValidCondition, true, v1alpha1.ReasonAsExpected, "Nomad accepts the rendered runner job.")
}

func setNomadCondition(ee *v1alpha1.ExecutionEnvironment, err error) {
	if err != nil && !errors.Is(err, nomadbridge.ErrInvalidJob) && !errors.Is(err, nomadbridge.ErrPolicyViolation) {
		setCond(ee, v1alpha1.NomadReachableCondition, false, v1alpha1.ReasonNomadUnreachable, fmt.Sprintf("Calling Nomad failed: %v.", err))
		return
	}
	setCond(ee, v1alpha1.NomadReachableCondition, true, v1alpha1.ReasonAsExpected, "Nomad answers.")
}

// setPoolFilledCondition says how far the pool is from its target, and why;
// existing counts the runners that count against the environment's runner limit.
func setPoolFilledCondition(ee *v1alpha1.ExecutionEnvironment, waiting, existing int) {
	s, target := ee.Status, ee.Spec.PrewarmingPoolSize
	switch {
	case s.IdleRunners == target:
		setCond(ee, v1alpha1.PoolFilledCondition, true, v1alpha1.ReasonAsExpected, fmt.Sprintf("%d of %d idle runners ready.", s.IdleRunners, target))
	case s.IdleRunners < target && existing >= ee.RunnerLimit():
		setCond(ee, v1alpha1.PoolFilledCondition, false, v1alpha1.ReasonRunnerLimitReached,
			fmt.Sprintf("%d of %d idle runners ready; the environment has %d runners (%d claimed), the most spec.maxRunners allows (%d): the pool refills as claimed runners are released.",
				s.IdleRunners, target, existing, s.ClaimedRunners, ee.RunnerLimit()))
	case s.IdleRunners < target && waiting > 0:
		setCond(ee, v1alpha1.PoolFilledCondition, false, v1alpha1.ReasonWaitingForNomad,
			fmt.Sprintf("%d of %d idle runners ready; %d runners wait for Nomad capacity (see their status.message).", s.IdleRunners, target, waiting))
	case s.IdleRunners < target:
		setCond(ee, v1alpha1.PoolFilledCondition, false, v1alpha1.ReasonScalingUp,
			fmt.Sprintf("%d of %d idle runners ready, %d pending.", s.IdleRunners, target, s.PendingRunners))
	default:
		setCond(ee, v1alpha1.PoolFilledCondition, false, v1alpha1.ReasonScalingDown, fmt.Sprintf("%d idle runners, %d wanted.", s.IdleRunners, target))
	}
}

// setReadyCondition summarises: the first of TemplateValid, NomadReachable and
// PoolFilled that is not True decides.
func setReadyCondition(ee *v1alpha1.ExecutionEnvironment) {
	for _, t := range []string{v1alpha1.TemplateValidCondition, v1alpha1.NomadReachableCondition, v1alpha1.PoolFilledCondition} {
		c := meta.FindStatusCondition(ee.Status.Conditions, t)
		if c == nil {
			setCond(ee, v1alpha1.ReadyCondition, false, v1alpha1.ReasonInternalError, t+" is not known yet; check controller logs.")
			return
		}
		if c.Status != metav1.ConditionTrue {
			setCond(ee, v1alpha1.ReadyCondition, false, c.Reason, c.Message)
			return
		}
	}
	setCond(ee, v1alpha1.ReadyCondition, true, v1alpha1.ReasonAsExpected, fmt.Sprintf("%d idle runners ready to be claimed.", ee.Status.IdleRunners))
}

// setCrashLoopCondition overrides PoolFilled while unclaimed runners keep
// failing and replacements wait for the backoff.
func setCrashLoopCondition(ee *v1alpha1.ExecutionEnvironment, crash CrashLoopStatus) {
	if !crash.Looping || ee.Status.IdleRunners >= ee.Spec.PrewarmingPoolSize {
		return
	}
	setCond(ee, v1alpha1.PoolFilledCondition, false, v1alpha1.ReasonRunnersCrashLooping,
		fmt.Sprintf("%d of %d idle runners ready; %d runners failed unclaimed in a row (see their status.message), next replacement in %s.",
			ee.Status.IdleRunners, ee.Spec.PrewarmingPoolSize, crash.Failures, crash.Hold.Round(time.Second)))
}

// crashLoopStarted says whether the status after a pass starts a crash loop
// the status before did not show, with the message of the Warning Event that
// tells so: once per crash loop, not once per pass.
func crashLoopStarted(before, after *v1alpha1.ExecutionEnvironmentStatus) (string, bool) {
	c := meta.FindStatusCondition(after.Conditions, v1alpha1.PoolFilledCondition)
	if c == nil || c.Reason != v1alpha1.ReasonRunnersCrashLooping {
		return "", false
	}
	if was := meta.FindStatusCondition(before.Conditions, v1alpha1.PoolFilledCondition); was != nil && was.Reason == v1alpha1.ReasonRunnersCrashLooping {
		return "", false
	}
	return c.Message, true
}
