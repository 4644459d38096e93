package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func TestStatusBatcher(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	b := NewStatusBatcher(time.Second, clk)
	uid := types.UID("ee-1")
	status := func(idle int32, poolFilled metav1.ConditionStatus, reason, msg string) *v1alpha1.ExecutionEnvironmentStatus {
		return &v1alpha1.ExecutionEnvironmentStatus{
			ObservedGeneration: 2, IdleRunners: idle, PendingRunners: 10 - idle, TemplateHash: "h1",
			Conditions: []metav1.Condition{{Type: v1alpha1.PoolFilledCondition, Status: poolFilled, Reason: reason, Message: msg}},
		}
	}
	filling := func(idle int32) *v1alpha1.ExecutionEnvironmentStatus {
		return status(idle, metav1.ConditionFalse, v1alpha1.ReasonScalingUp, "filling")
	}
	check := func(step string, got, want time.Duration) {
		t.Helper()
		if got != want {
			t.Errorf("%s: hold %s, want %s", step, got, want)
		}
	}

	check("first write of an environment", b.Hold(uid, filling(1), filling(2)), 0)
	b.Wrote(uid)
	clk.SetTime(clk.Now().Add(300 * time.Millisecond))
	check("counts only, 300ms after the last write", b.Hold(uid, filling(2), filling(3)), 700*time.Millisecond)
	check("another environment", b.Hold("ee-2", filling(2), filling(3)), 0)
	check("a condition turns True", b.Hold(uid, filling(9), status(10, metav1.ConditionTrue, v1alpha1.ReasonAsExpected, "filled")), 0)
	check("a condition's reason changes", b.Hold(uid, filling(9), status(9, metav1.ConditionFalse, v1alpha1.ReasonWaitingForNomad, "filling")), 0)
	newGen := filling(3)
	newGen.ObservedGeneration = 3
	check("a new generation observed", b.Hold(uid, filling(3), newGen), 0)
	newHash := filling(3)
	newHash.TemplateHash = "h2"
	check("a new template hash", b.Hold(uid, filling(3), newHash), 0)
	clk.SetTime(clk.Now().Add(700 * time.Millisecond))
	check("counts only, the interval over", b.Hold(uid, filling(3), filling(4)), 0)
	b.Forget(uid)
	check("forgotten", b.Hold(uid, filling(3), filling(4)), 0)
	if off := NewStatusBatcher(0, clk); off.Hold(uid, filling(3), filling(4)) != 0 {
		t.Error("a zero interval must never hold a write")
	}
	var none *StatusBatcher
	check("nil batcher", none.Hold(uid, filling(3), filling(4)), 0)
}
