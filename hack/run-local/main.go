// Command run-local is the quickstart: it starts a local control plane
// (kube-apiserver + etcd, with our CRDs) and a Nomad dev agent, runs the operator
// against both, applies the sample environment, and prints what to try next.
// Ctrl-C stops everything it started and removes its temp dirs.
// Run it with `make run-local`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "run-local:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Ctrl-C also ends a pipe reader such as `| tee`; a write to it then must not
	// kill us before we have stopped what we started.
	signal.Ignore(syscall.SIGPIPE)
	ctrl.SetLogger(zap.New(zap.UseDevMode(true)))

	fmt.Println("Starting a Nomad dev agent (raw_exec) ...")
	agent, err := nomaddev.Start(ctx, nomaddev.Options{})
	if err != nil {
		return err
	}
	defer agent.Stop()

	fmt.Println("Starting kube-apiserver and etcd with the CRDs ...")
	cp, err := controlplane.Start()
	if err != nil {
		return err
	}
	defer cp.Stop()

	api, err := agent.Client()
	if err != nil {
		return err
	}
	bridge, err := nomadbridge.NewClient(api, "local")
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{
		Scheme:                 controlplane.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{Bridge: bridge}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	if err := applySample(ctx, mgr.GetClient()); err != nil {
		return err
	}
	root, _ := controlplane.RepoRoot()
	fmt.Printf(`
The operator runs. In another terminal:

  export KUBECONFIG=%[1]s NOMAD_ADDR=%[2]s PATH=%[3]s:$PATH
  kubectl wait --for=condition=Ready ee/python --timeout=60s
  kubectl get ee,rn
  make plugin
  kubectl nomadrunner claim python --holder me        # prints runner and token
  kubectl nomadrunner exec RUNNER -- sh -c 'echo hello from $NOMAD_JOB_NAME'
  kubectl nomadrunner release RUNNER --token TOKEN
  nomad job status                                     # the runner jobs in Nomad

Ctrl-C stops everything.
`, cp.Kubeconfig, agent.Addr, filepath.Join(root, "bin"))

	select {
	case <-ctx.Done():
	case err := <-done:
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
	}
	fmt.Println("Stopping ...")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-stopCtx.Done():
	}
	return nil
}

// applySample creates the sample environment in the default namespace, as
// `kubectl apply -f config/samples/...` would.
func applySample(ctx context.Context, c client.Client) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "samples", "execution_v1alpha1_executionenvironment.yaml"))
	if err != nil {
		return err
	}
	ee := &v1alpha1.ExecutionEnvironment{}
	if err := yaml.Unmarshal(raw, ee); err != nil {
		return fmt.Errorf("read sample: %w", err)
	}
	ee.Namespace = "default"
	if err := c.Create(ctx, ee); err != nil {
		return fmt.Errorf("apply sample environment: %w", err)
	}
	fmt.Printf("Applied the sample: executionenvironment/%s (pool %d, raw_exec template)\n", ee.Name, ee.Spec.PrewarmingPoolSize)
	return nil
}
