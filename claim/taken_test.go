package claim

import (
	"testing"
	"time"
)

func TestTakenSetSkipsWhatThisProcessClaimedRecently(t *testing.T) {
	s := &takenSet{until: map[string]time.Time{}}
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if !s.take("a", t0) {
		t.Fatal("a fresh runner must be takeable")
	}
	if s.take("a", t0.Add(time.Second)) {
		t.Fatal("a runner this process just patched must be skipped")
	}
	if !s.take("b", t0.Add(time.Second)) {
		t.Fatal("another runner must be takeable")
	}
	s.forget("b") // its claim failed for another reason: it may still be Idle
	if !s.take("b", t0.Add(2*time.Second)) {
		t.Fatal("a forgotten runner must be takeable again")
	}
	if !s.take("a", t0.Add(takenFor+time.Second)) {
		t.Fatal("a mark must expire after takenFor")
	}
	// Marks of runners never seen again are swept, so the set does not grow.
	s.take("c", t0.Add(3*takenFor))
	if len(s.until) != 1 {
		t.Fatalf("%d marks after the sweep, want only c's", len(s.until))
	}
}
