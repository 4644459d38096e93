//go:build soak

// Package soak runs the operator in-process for SOAK_DURATION (default 10m)
// under a claim/release loop against a real kube-apiserver + etcd and a real
// Nomad dev agent, sampling the process's RSS and goroutines every
// SOAK_INTERVAL (default 10s). It fails if, in the second half, RSS rises above
// the first half's peak by more than 20% + 32 MiB, or goroutines above the first
// half's peak by more than 50 (poseidon#429: goroutines leaked until OOM).
// Run it with `make soak`; it is not part of `make test`.
package soak

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	corev1 "k8s.io/api/core/v1"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

type sample struct {
	at         time.Duration
	rssKiB     int64
	goroutines int
	cycles     int64
	errors     int64
}

func rssKiB(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("read /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func TestSoak(t *testing.T) {
	duration := envDuration("SOAK_DURATION", 10*time.Minute)
	interval := envDuration("SOAK_INTERVAL", 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	agent, err := nomaddev.Start(ctx, nomaddev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	api, err := agent.Client()
	if err != nil {
		t.Fatal(err)
	}
	bridge, err := nomadbridge.NewClient(api, "soak")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	// The dev agent runs raw_exec only, which the built-in policy refuses.
	if err := controlplane.AllowRawExec(context.Background(), cp.Client); err != nil {
		t.Fatal(err)
	}

	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{
		Scheme: controlplane.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	if err := controllers.Setup(mgrCtx, mgr, controllers.Options{Bridge: bridge, OrphanInterval: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	defer func() { stopMgr(); <-done }()

	c := cp.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "soak"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, fixtures.Environment("soak", "soak", 5)); err != nil {
		t.Fatal(err)
	}

	// Four clients claim, renew once, hold briefly and release, in a loop.
	var cycles, failures atomic.Int64
	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loopCtx.Err() == nil {
				if err := cycle(loopCtx, c, fmt.Sprintf("soaker-%d", i)); err != nil {
					if loopCtx.Err() == nil {
						failures.Add(1)
					}
					time.Sleep(200 * time.Millisecond)
					continue
				}
				cycles.Add(1)
			}
		}()
	}

	start := time.Now()
	var samples []sample
	take := func() {
		runtime.GC()
		samples = append(samples, sample{
			at: time.Since(start).Round(time.Second), rssKiB: rssKiB(t), goroutines: runtime.NumGoroutine(),
			cycles: cycles.Load(), errors: failures.Load(),
		})
		s := samples[len(samples)-1]
		t.Logf("%8s  rss %7.1f MiB  goroutines %5d  claim/release cycles %6d  errors %d", s.at, float64(s.rssKiB)/1024, s.goroutines, s.cycles, s.errors)
	}
	take()
	tick := time.NewTicker(interval)
	for time.Since(start) < duration {
		<-tick.C
		take()
	}
	tick.Stop()
	stopLoop()
	wg.Wait()

	half := len(samples) / 2
	var firstRSS, secondRSS int64
	var firstG, secondG int
	for i, s := range samples {
		if i < half {
			firstRSS, firstG = max(firstRSS, s.rssKiB), max(firstG, s.goroutines)
		} else {
			secondRSS, secondG = max(secondRSS, s.rssKiB), max(secondG, s.goroutines)
		}
	}
	rssBound := firstRSS*12/10 + 32*1024
	t.Logf("first half: peak rss %.1f MiB, peak goroutines %d; second half: peak rss %.1f MiB (bound %.1f), peak goroutines %d (bound %d); %d cycles, %d errors",
		float64(firstRSS)/1024, firstG, float64(secondRSS)/1024, float64(rssBound)/1024, secondG, firstG+50, cycles.Load(), failures.Load())
	if secondRSS > rssBound {
		t.Errorf("RSS grew in the second half: %.1f MiB > bound %.1f MiB", float64(secondRSS)/1024, float64(rssBound)/1024)
	}
	if secondG > firstG+50 {
		t.Errorf("goroutines grew in the second half: %d > %d", secondG, firstG+50)
	}
	if cycles.Load() == 0 {
		t.Errorf("no claim/release cycle completed")
	}
}

func cycle(ctx context.Context, c client.Client, holder string) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	rn, err := claim.Claim(wctx, c, "soak", "soak", claim.Options{Holder: holder, Wait: true})
	if err != nil {
		return err
	}
	token := rn.Status.Claim.Token
	if err := claim.Renew(wctx, c, rn, token); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	return claim.Release(wctx, c, rn, token)
}
