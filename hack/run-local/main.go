// Command run-local is the quickstart: it starts a local control plane
// (kube-apiserver + etcd, with our CRDs) and a Nomad dev agent, runs the
// operator's own binary (bin/manager, as `make run` would) against both, applies
// the sample environment, and prints what to try next. Ctrl-C stops everything
// it started and removes its temp dirs. Run it with `make run-local`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// localInstance names the quickstart's operator in its runner jobs' meta.
const localInstance = "local"

func main() {
	manager := flag.String("manager", "", "the operator binary (default: bin/manager of the repository)")
	flag.Parse()
	if err := run(*manager); err != nil {
		fmt.Fprintln(os.Stderr, "run-local:", err)
		os.Exit(1)
	}
}

func run(manager string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Ctrl-C also ends a pipe reader such as `| tee`; a write to it then must not
	// kill us before we have stopped what we started.
	signal.Ignore(syscall.SIGPIPE)
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	if manager == "" {
		manager = filepath.Join(root, "bin", "manager")
	}
	if _, err := os.Stat(manager); err != nil {
		return fmt.Errorf("no operator binary (run `make build`): %w", err)
	}

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
	if err := controlplane.AllowRawExec(context.Background(), cp.Client); err != nil {
		return err
	}
	fmt.Printf("Allowed raw_exec runners (EnvironmentPolicy %s): the dev agent has no docker. raw_exec runs code as the Nomad agent's user, on this machine's network; never allow it where untrusted users create environments.\n", controlplane.RawExecPolicyName)

	metricsAddr, probeAddr := freeAddr(), freeAddr()
	fmt.Println("Starting the operator:", manager)
	// An explicit instance: the Nomad agent is this quickstart's own, and the
	// derived default would need kube-system, which a fresh API server makes
	// only a moment after it answers.
	op := exec.Command(manager,
		"--operator-instance="+localInstance,
		"--metrics-secure=false", "--metrics-bind-address="+metricsAddr,
		"--health-probe-bind-address="+probeAddr)
	op.Env = append(os.Environ(), "KUBECONFIG="+cp.Kubeconfig, "NOMAD_ADDR="+agent.Addr)
	op.Stdout, op.Stderr = os.Stdout, os.Stderr
	// Its own process group: a terminal's Ctrl-C reaches only us, and we pass on
	// exactly one signal (a second one makes the manager exit at once, uncleanly).
	op.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := op.Start(); err != nil {
		return fmt.Errorf("start the operator: %w", err)
	}
	var opErr error
	exited := make(chan struct{})
	go func() { opErr = op.Wait(); close(exited) }()
	defer func() {
		fmt.Println("Stopping the operator ...")
		_ = op.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = op.Process.Kill()
			<-exited
		}
	}()
	if err := waitReady(ctx, "http://"+probeAddr+"/readyz", exited); err != nil {
		return err
	}

	if err := applySample(ctx, cp.Client, root); err != nil {
		return err
	}
	fmt.Printf(`
The operator runs, as operator instance %[5]q (set with --operator-instance; an
installation without it derives its own, see "Operator instance" in README.md).
In another terminal:

  export KUBECONFIG=%[1]s NOMAD_ADDR=%[2]s PATH=%[3]s:$PATH
  kubectl wait --for=condition=Ready ee/python --timeout=60s
  kubectl get ee,rn
  make plugin
  kubectl nomadrunner claim python --holder me        # prints runner and token
  kubectl nomadrunner exec RUNNER -- sh -c 'echo hello from $NOMAD_JOB_NAME'
  kubectl nomadrunner release RUNNER --token TOKEN
  nomad job status                                     # the runner jobs in Nomad
  curl -s http://%[4]s/metrics | grep ^nomadrunner_    # the operator's metrics

Ctrl-C stops everything.
`, cp.Kubeconfig, agent.Addr, filepath.Join(root, "bin"), metricsAddr, localInstance)

	select {
	case <-ctx.Done():
		fmt.Println("Stopping ...")
		return nil
	case <-exited:
		return fmt.Errorf("the operator exited: %v", opErr)
	}
}

// waitReady waits until the operator's readiness probe passes: Nomad answers
// and the event stream is connected.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	deadline := time.After(60 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the operator exited before it was ready (see its log above)")
		case <-deadline:
			return errors.New("the operator was not ready within 60s (see its log above)")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// applySample creates the sample environment in the default namespace, as
// `kubectl apply -f config/samples/...` would.
func applySample(ctx context.Context, c client.Client, root string) error {
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
