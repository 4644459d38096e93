package nomadbridge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	nomad "github.com/hashicorp/nomad/api"
)

func TestNextStreamStart(t *testing.T) {
	const maxBackoff = 30 * time.Second
	for _, tc := range []struct {
		name string
		last streamStart
		end  streamEnd
		want streamStart
	}{
		// Where the next stream resumes.
		{"the first stream fails to open: from now, at once after the shortest wait",
			streamStart{}, streamEnd{}, streamStart{index: 0, backoff: minReconnectBackoff}},
		{"a stream that read events resumes after the last one",
			streamStart{index: 0}, streamEnd{read: true, lastIndex: 42, connectedFor: time.Minute}, streamStart{index: 43, backoff: minReconnectBackoff}},
		{"a stream that read nothing resumes where it was opened",
			streamStart{index: 43, backoff: time.Second}, streamEnd{connectedFor: time.Second}, streamStart{index: 43, backoff: 2 * time.Second}},
		{"a failure to open keeps the index",
			streamStart{index: 43, backoff: time.Second}, streamEnd{}, streamStart{index: 43, backoff: 2 * time.Second}},
		{"a restarted Nomad's lower indexes are followed, not the old ones",
			streamStart{index: 43, backoff: time.Second}, streamEnd{read: true, lastIndex: 5, connectedFor: time.Second}, streamStart{index: 6, backoff: 2 * time.Second}},

		// How long to wait first.
		{"second failure in a row", streamStart{backoff: 500 * time.Millisecond}, streamEnd{}, streamStart{backoff: time.Second}},
		{"doubles", streamStart{backoff: 4 * time.Second}, streamEnd{}, streamStart{backoff: 8 * time.Second}},
		{"capped", streamStart{backoff: 20 * time.Second}, streamEnd{}, streamStart{backoff: maxBackoff}},
		{"stays at the cap", streamStart{backoff: maxBackoff}, streamEnd{}, streamStart{backoff: maxBackoff}},
		{"a stream that broke at once is a failure",
			streamStart{backoff: 4 * time.Second}, streamEnd{connectedFor: 200 * time.Millisecond}, streamStart{backoff: 8 * time.Second}},
		{"a stream up for less than the cap is a failure",
			streamStart{backoff: maxBackoff}, streamEnd{connectedFor: maxBackoff - time.Second}, streamStart{backoff: maxBackoff}},
		{"a stream up for the cap starts again",
			streamStart{backoff: maxBackoff}, streamEnd{connectedFor: maxBackoff}, streamStart{backoff: minReconnectBackoff}},
		{"a long first stream", streamStart{}, streamEnd{connectedFor: time.Hour}, streamStart{backoff: minReconnectBackoff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextStreamStart(tc.last, tc.end, maxBackoff); got != tc.want {
				t.Errorf("nextStreamStart(%+v, %+v) = %+v, want %+v", tc.last, tc.end, got, tc.want)
			}
		})
	}
}

// streamClient is a small fake of Client: only the event stream and the two
// listings, each Events call handing out the next prepared stream and
// recording the index asked for. The real stream is exercised by the
// integration suites.
type streamClient struct {
	Client
	mu      sync.Mutex
	indexes []uint64
	streams []chan *nomad.Events
}

func (c *streamClient) Events(_ context.Context, index uint64) (<-chan *nomad.Events, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexes = append(c.indexes, index)
	if len(c.streams) == 0 {
		return nil, errors.New("no more streams")
	}
	ch := c.streams[0]
	c.streams = c.streams[1:]
	return ch, nil
}

func (c *streamClient) ListRunnerJobs(context.Context) ([]JobRef, error) { return nil, nil }

func (c *streamClient) ListRunnerAllocations(context.Context) ([]*nomad.AllocationListStub, error) {
	return nil, nil
}

// recorder is a Handler writing down what it is told, in order.
type recorder chan string

func (r recorder) Resync(context.Context) { r <- "resync" }

func (r recorder) JobChanged(_ context.Context, jobID string, deregistered bool) {
	if deregistered {
		jobID += " deregistered"
	}
	r <- jobID
}

func TestWatcherResumesFromLastIndexAndResyncs(t *testing.T) {
	jobA := NewRunnerJobID("python")
	first, second, third := make(chan *nomad.Events, 4), make(chan *nomad.Events, 4), make(chan *nomad.Events, 4)
	first <- &nomad.Events{Index: 41, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: jobA, Index: 41}}}
	first <- &nomad.Events{Index: 42, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: "someone-elses-job", Index: 42}}}
	first <- &nomad.Events{Index: 42} // a heartbeat moves nothing
	close(first)                      // the connection drops
	// Nomad restarted with its state lost: its indexes start again from 1.
	second <- &nomad.Events{Index: 5, Events: []nomad.Event{{Topic: nomad.TopicJob, Key: jobA, Type: "JobDeregistered", Index: 5}}}
	close(second)
	client := &streamClient{streams: []chan *nomad.Events{first, second, third}}
	w := &Watcher{Client: client, Store: NewJobStore(clock.RealClock{})}

	got := make(recorder, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, got) }()

	// Every connection resyncs before it forwards events; the foreign job
	// maps to nothing.
	want := []string{"resync", jobA, "resync", jobA + " deregistered", "resync"}
	timeout := time.After(10 * time.Second)
	for i, next := range want {
		select {
		case e := <-got:
			if e != next {
				t.Fatalf("told %q at %d, want %q (all: %v)", e, i, next, want)
			}
		case <-timeout:
			t.Fatalf("told nothing at %d, want %q (all: %v)", i, next, want)
		}
	}
	if !w.Connected() {
		t.Error("the third stream is open but the watcher says it is not connected")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if w.Connected() {
		t.Error("connected after Run returned")
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	if len(client.indexes) != 3 || client.indexes[0] != 0 || client.indexes[1] != 43 || client.indexes[2] != 6 {
		t.Errorf("stream opened at indexes %v, want [0 43 6]: resume after the last event read, also when Nomad's indexes went back", client.indexes)
	}
	select {
	case e := <-got:
		t.Errorf("told %q after the last stream opened", e)
	default:
	}
}
