package nomadbridge_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// These tests use an HTTP server that is not Nomad: they test the bound the
// client puts on its transport, which no real agent can be made to exceed.

// silentNomad accepts every request and never answers until the test ends.
func silentNomad(t *testing.T) *httptest.Server {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv
}

func clientFor(t *testing.T, addr string, callTimeout, idleTimeout time.Duration) *nomadbridge.NomadClient {
	t.Helper()
	c, err := nomadbridge.NewClientFromConfig(nomadbridge.Config{
		Address: addr, Instance: "timeouts", CallTimeout: callTimeout, EventStreamIdleTimeout: idleTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEveryCallEndsAtTheCallTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	t.Setenv("NOMAD_REGION", "") // so that Placement asks the agent
	c := clientFor(t, silentNomad(t).URL, timeout, 0)
	jobID := nomadbridge.NewRunnerJobID("python")
	meta := nomadbridge.RunnerMeta{Instance: "timeouts", Namespace: "ns", Environment: "python", Runner: "python-abcde", UID: "u"}
	job := rawExecJob(jobID, meta.Map())

	for _, tc := range []struct {
		call string // what the error must name
		do   func(ctx context.Context) error
	}{
		{"ask nomad for its leader", c.Ping},
		{"register runner job " + jobID, func(ctx context.Context) error { return c.RegisterRunnerJob(ctx, job) }},
		{"before releasing it", func(ctx context.Context) error { return c.ReleaseRunnerJob(ctx, "default", jobID, meta) }},
		{"list allocations of runner job " + jobID, func(ctx context.Context) error {
			_, err := c.JobAllocations(ctx, "default", jobID)
			return err
		}},
		{"read allocation a1", func(ctx context.Context) error {
			_, err := c.AllocationPorts(ctx, "default", "a1")
			return err
		}},
		{"list runner jobs", func(ctx context.Context) error {
			_, err := c.ListRunnerJobs(ctx)
			return err
		}},
		{"list allocations", func(ctx context.Context) error {
			_, err := c.ListRunnerAllocations(ctx)
			return err
		}},
		{"parse job template", func(ctx context.Context) error {
			_, err := c.ParseHCL(ctx, `job "x" {}`)
			return err
		}},
		{"validate job " + jobID, func(ctx context.Context) error { return c.ValidateJob(ctx, job) }},
		{"list evaluations of runner job " + jobID, func(ctx context.Context) error {
			_, err := c.PlacementFailure(ctx, "default", jobID)
			return err
		}},
		{"read nomad scheduler configuration", func(ctx context.Context) error {
			_, err := c.MemoryOversubscription(ctx)
			return err
		}},
		{"ask nomad for its region", func(ctx context.Context) error {
			_, _, err := c.Placement(ctx)
			return err
		}},
		{"open nomad event stream", func(ctx context.Context) error {
			_, err := c.Events(ctx, 7)
			return err
		}},
	} {
		t.Run(tc.call, func(t *testing.T) {
			// The caller's own context has no deadline: the bound is the client's.
			start := time.Now()
			result := make(chan error, 1)
			go func() { result <- tc.do(context.Background()) }()
			var err error
			select {
			case err = <-result:
			case <-time.After(timeout + 5*time.Second):
				t.Fatalf("no return after %s: the call is not bounded", timeout+5*time.Second)
			}
			took := time.Since(start)
			t.Log(err)
			if !errors.Is(err, nomadbridge.ErrCallTimeout) {
				t.Fatalf("err = %v, want ErrCallTimeout", err)
			}
			if !strings.Contains(err.Error(), tc.call) {
				t.Errorf("err = %q does not name the call %q", err, tc.call)
			}
			if !strings.Contains(err.Error(), timeout.String()) {
				t.Errorf("err = %q does not say the timeout %s", err, timeout)
			}
			if took < timeout || took > timeout+2*time.Second {
				t.Errorf("the call took %s, want about %s", took, timeout)
			}
		})
	}
}

func TestCallerDeadlineIsNotReportedAsCallTimeout(t *testing.T) {
	c := clientFor(t, silentNomad(t).URL, time.Minute, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.ListRunnerJobs(ctx)
	if err == nil || errors.Is(err, nomadbridge.ErrCallTimeout) {
		t.Fatalf("err = %v, want the caller's deadline, not the call timeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

// streamingNomad answers the event stream with a heartbeat, then one more
// every beat (never, for beat 0), and holds the connection open.
func streamingNomad(t *testing.T, beat time.Duration) *httptest.Server {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/event/stream" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("{}\n"))
		w.(http.Flusher).Flush()
		var tick <-chan time.Time
		if beat > 0 {
			ticker := time.NewTicker(beat)
			defer ticker.Stop()
			tick = ticker.C
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-tick:
				_, _ = w.Write([]byte("{}\n"))
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv
}

func TestEventStreamEndsWhenHeartbeatsStop(t *testing.T) {
	const idle = 400 * time.Millisecond
	c := clientFor(t, streamingNomad(t, 0).URL, time.Second, idle)
	start := time.Now()
	ch, err := c.Events(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var last *nomad.Events
	for batch := range ch {
		last = batch
	}
	took := time.Since(start)
	if last == nil || last.Err == nil || !strings.Contains(last.Err.Error(), "no event or heartbeat for "+idle.String()) {
		t.Fatalf("last batch = %+v, want an error saying the stream went idle", last)
	}
	if took < idle || took > idle+2*time.Second {
		t.Errorf("the stream ended after %s, want about %s", took, idle)
	}
}

func TestEventStreamWithHeartbeatsStaysOpen(t *testing.T) {
	const idle = 400 * time.Millisecond
	c := clientFor(t, streamingNomad(t, 100*time.Millisecond).URL, time.Second, idle)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	heartbeats := 0
	deadline := time.After(5 * idle)
	for open := true; open; {
		select {
		case batch, ok := <-ch:
			if !ok {
				t.Fatal("the stream ended while Nomad sent heartbeats")
			}
			if batch.Err != nil {
				t.Fatalf("the stream failed while Nomad sent heartbeats: %v", batch.Err)
			}
			if batch.IsHeartbeat() {
				heartbeats++
			}
		case <-deadline:
			open = false
		}
	}
	if heartbeats < 5 {
		t.Errorf("saw %d heartbeats in %s, want them passed through", heartbeats, 5*idle)
	}
	cancel()
	for batch := range ch {
		if batch.Err != nil {
			t.Errorf("the caller ending the stream is no error: %v", batch.Err)
		}
	}
}
