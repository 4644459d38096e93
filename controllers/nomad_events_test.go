package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// streamBridge is a small fake of our own nomadbridge.Client: only the event
// stream, each call handing out the next prepared stream and recording the
// index asked for. The real stream is exercised by the integration suites.
type streamBridge struct {
	nomadbridge.Client
	mu      sync.Mutex
	indexes []uint64
	streams []chan *nomad.Events
}

func (b *streamBridge) Events(_ context.Context, index uint64) (<-chan *nomad.Events, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.indexes = append(b.indexes, index)
	if len(b.streams) == 0 {
		return nil, errors.New("no more streams")
	}
	ch := b.streams[0]
	b.streams = b.streams[1:]
	return ch, nil
}

func runnerWithJob(name, jobID string) *v1alpha1.Runner {
	return &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "ns", Annotations: map[string]string{JobIDAnnotation: jobID},
	}}
}

func TestNomadEventSourceResumesFromLastIndexAndResyncs(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	jobA, jobB := nomadbridge.NewRunnerJobID("python"), nomadbridge.NewRunnerJobID("python")
	reader := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(runnerWithJob("python-a", jobA), runnerWithJob("python-b", jobB)).
		WithIndex(&v1alpha1.Runner{}, jobIDIndex, func(o client.Object) []string {
			return []string{o.GetAnnotations()[JobIDAnnotation]}
		}).Build()

	first, second, third := make(chan *nomad.Events, 4), make(chan *nomad.Events, 4), make(chan *nomad.Events, 4)
	first <- &nomad.Events{Index: 41, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: jobA, Index: 41}}}
	first <- &nomad.Events{Index: 42, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: "someone-elses-job", Index: 42}}}
	close(first) // the connection drops
	// Nomad restarted with its state lost: its indexes start again from 1.
	second <- &nomad.Events{Index: 5, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: jobA, Index: 5}}}
	close(second)
	bridge := &streamBridge{streams: []chan *nomad.Events{first, second, third}}

	out := make(chan event.GenericEvent, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&NomadEventSource{Bridge: bridge, Reader: reader, Out: out}).Start(ctx) }()

	// Connect: a resync of both runners, then the event for runner a.
	// Reconnect: a resync of both again, then the restarted Nomad's event for a.
	// Reconnect again: a resync of both.
	want := []string{"python-a", "python-b", "python-a", "python-a", "python-b", "python-a", "python-a", "python-b"}
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case e := <-out:
			got = append(got, e.Object.GetName())
		case <-timeout:
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start returned %v", err)
	}
	// Resyncs list in name order; the event for a sits between them.
	if got[2] != "python-a" || got[5] != "python-a" || len(got) != 8 {
		t.Errorf("events %v, want %v", got, want)
	}
	bridge.mu.Lock()
	defer bridge.mu.Unlock()
	if len(bridge.indexes) < 3 || bridge.indexes[0] != 0 || bridge.indexes[1] != 43 || bridge.indexes[2] != 6 {
		t.Errorf("stream opened at indexes %v, want [0 43 6 ...]: resume after the last event seen, also when Nomad's indexes went back", bridge.indexes)
	}
	select {
	case e := <-out:
		t.Errorf("unexpected extra event for %s (the foreign job must map to nothing)", e.Object.GetName())
	default:
	}
}

func TestNextReconnectBackoff(t *testing.T) {
	const maxBackoff = 30 * time.Second
	for _, tc := range []struct {
		name               string
		last, connectedFor time.Duration
		want               time.Duration
	}{
		{"first failure", 0, 0, 500 * time.Millisecond},
		{"second failure in a row", 500 * time.Millisecond, 0, time.Second},
		{"doubles", 4 * time.Second, 0, 8 * time.Second},
		{"capped", 20 * time.Second, 0, maxBackoff},
		{"stays at the cap", maxBackoff, 0, maxBackoff},
		{"a stream that broke at once is a failure", 4 * time.Second, 200 * time.Millisecond, 8 * time.Second},
		{"a stream up for less than the cap is a failure", maxBackoff, maxBackoff - time.Second, maxBackoff},
		{"a stream up for the cap starts again", maxBackoff, maxBackoff, 500 * time.Millisecond},
		{"a long first stream", 0, time.Hour, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextReconnectBackoff(tc.last, tc.connectedFor, maxBackoff); got != tc.want {
				t.Errorf("nextReconnectBackoff(%s, %s, %s) = %s, want %s", tc.last, tc.connectedFor, maxBackoff, got, tc.want)
			}
		})
	}
}
