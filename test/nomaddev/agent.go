// Package nomaddev starts and stops a real Nomad agent in dev mode (server and
// client in one process, raw_exec enabled) on free loopback ports, for tests and
// the local quickstart. Nothing here is a fake: it runs the binary hack/build-nomad.sh
// builds.
package nomaddev

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
)

// Options tune the dev agent. The zero value is a sensible test agent.
type Options struct {
	// Binary is the nomad executable; default $NOMAD_BIN, else bin/nomad of the repo.
	Binary string
	// CPUTotalCompute is the node's CPU in MHz; default 20000 (≈400 runners of 50 MHz).
	CPUTotalCompute int
	// MemoryTotalMB is the node's memory in MB; default 16384.
	MemoryTotalMB int
	// StartTimeout bounds the wait for a ready node; default 60s.
	StartTimeout time.Duration
}

// Agent is a running Nomad dev agent.
type Agent struct {
	// Addr is the agent's HTTP address, e.g. http://127.0.0.1:4646.
	Addr string
	// LogPath is the file the agent writes its output to (inside a temp dir that
	// Stop removes).
	LogPath string

	bin   string
	ports []int
	opts  Options
	cmd   *exec.Cmd
	dir   string
	done  chan error
}

// Start runs a dev agent and waits until its node is ready with raw_exec healthy.
// The caller must call Stop, also when the test fails (DeferCleanup).
func Start(ctx context.Context, opts Options) (*Agent, error) {
	bin, err := binary(opts.Binary)
	if err != nil {
		return nil, err
	}
	if opts.CPUTotalCompute == 0 {
		opts.CPUTotalCompute = 20000
	}
	if opts.MemoryTotalMB == 0 {
		opts.MemoryTotalMB = 16384
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	a := &Agent{Addr: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), bin: bin, ports: ports, opts: opts}
	if err := a.launch(ctx); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

// Restart stops the agent and starts a new one on the same address. Dev mode
// keeps nothing, so the new agent knows no job: it is Nomad losing everything,
// as clients see it (same address, empty state, indexes from 1 again).
func (a *Agent) Restart(ctx context.Context) error {
	a.Stop()
	return a.launch(ctx)
}

// Kill stops the agent like Stop, for a fault that lasts until Relaunch.
func (a *Agent) Kill() { a.Stop() }

// Relaunch starts a stopped agent again on the same address (empty state).
func (a *Agent) Relaunch(ctx context.Context) error { return a.launch(ctx) }

func (a *Agent) launch(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "nro-test-nomad-")
	if err != nil {
		return fmt.Errorf("create nomad agent dir: %w", err)
	}
	a.dir, a.done = dir, make(chan error, 1)

	config := filepath.Join(dir, "dev.hcl")
	if err := os.WriteFile(config, []byte(agentConfig(a.ports, a.opts)), 0o600); err != nil {
		return fmt.Errorf("write nomad agent config: %w", err)
	}
	a.LogPath = filepath.Join(dir, "agent.log")
	logFile, err := os.Create(a.LogPath)
	if err != nil {
		return fmt.Errorf("create nomad agent log: %w", err)
	}
	defer logFile.Close()

	a.cmd = exec.Command(a.bin, "agent", "-dev", "-bind", "127.0.0.1",
		"-data-dir", filepath.Join(dir, "data"), "-config", config)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	// Nomad's plugins (logmon, executors) make socket dirs in TMPDIR and leave
	// them behind: keep them inside the agent's dir, which Stop removes.
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("create nomad agent tmp dir: %w", err)
	}
	a.cmd.Env = append(agentEnv(), "TMPDIR="+tmp)
	// Its own process group, so Stop can signal the agent and what it spawned.
	// No Pdeathsig: Linux sends it when the *thread* that forked exits, and the
	// Go runtime may retire that thread while the test runs (golang/go#27505),
	// killing a healthy agent mid-suite. An agent left behind by a killed test
	// binary is found and killed by hack/run-tests.sh, which fails the run.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("start nomad agent %s: %w", a.bin, err)
	}
	done := a.done
	cmd := a.cmd
	go func() { done <- cmd.Wait() }()

	waitCtx, cancel := context.WithTimeout(ctx, a.opts.StartTimeout)
	defer cancel()
	if err := a.waitReady(waitCtx); err != nil {
		return fmt.Errorf("nomad agent at %s not ready (log %s): %w\n%s", a.Addr, a.LogPath, err, a.tail())
	}
	return nil
}

// Client returns a Nomad API client for the agent.
func (a *Agent) Client() (*nomad.Client, error) {
	cfg := nomad.DefaultConfig()
	cfg.Address = a.Addr
	cfg.Namespace, cfg.Region, cfg.SecretID = "", "", ""
	return nomad.NewClient(cfg)
}

// Stop ends the agent and every process it started, and removes its directory.
// It is safe to call more than once and on a partly started agent.
func (a *Agent) Stop() {
	if a == nil {
		return
	}
	if a.cmd != nil && a.cmd.Process != nil {
		select {
		case err := <-a.done:
			// It ended before anyone asked: a suite that fails on a dead agent
			// says why only here (Stop removes the log). Its process group may
			// be gone and its ID reused, so nothing is signalled.
			fmt.Fprintf(os.Stderr, "nomaddev: the agent at %s had exited on its own (%v); its log ends:\n%s\n", a.Addr, err, a.tail())
		default:
			// SIGTERM first: the agent then stops its tasks itself (1-2 s).
			_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(15 * time.Second):
				_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
				<-a.done
			}
		}
		// Tasks that left the group (raw_exec executors set their own session)
		// are found by their allocation directory, which lies under ours.
		killUnder(a.dir)
		a.cmd = nil
	}
	if a.dir != "" {
		// The client mounts a tmpfs on each task's secrets and private dirs, and
		// an agent that exits does not always unmount them.
		unmountUnder(a.dir)
		_ = os.RemoveAll(a.dir)
		a.dir = ""
	}
}

func (a *Agent) waitReady(ctx context.Context) error {
	client, err := a.Client()
	if err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case err := <-a.done:
			a.done <- err
			return fmt.Errorf("agent exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
		if last = nodeReady(client); last == nil {
			return nil
		}
	}
}

func nodeReady(client *nomad.Client) error {
	resp, err := http.Get(client.Address() + "/v1/agent/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent health: %s", resp.Status)
	}
	nodes, _, err := client.Nodes().List(nil)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Status != nomad.NodeStatusReady {
			continue
		}
		if d, ok := n.Drivers["raw_exec"]; ok && d.Detected && d.Healthy {
			return nil
		}
	}
	return errors.New("no ready node with a healthy raw_exec driver yet")
}

func agentConfig(ports []int, opts Options) string {
	return fmt.Sprintf(`
ports {
  http = %d
  rpc  = %d
  serf = %d
}
server {
  # Tests burst hundreds of events; the default buffer drops slow readers.
  event_buffer_size = 10000
}
client {
  cpu_total_compute = %d
  memory_total_mb   = %d
  options {
    # No cloud here: the AWS fingerprinter alone can fail the agent's start.
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
consul {
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}
vault {
  enabled = false
}
`, ports[0], ports[1], ports[2], opts.CPUTotalCompute, opts.MemoryTotalMB)
}

// agentEnv is the test process's environment minus what breaks or misdirects a
// dev agent: AWS_CA_BUNDLE makes Nomad 1.11 fail at start, and NOMAD_* settings
// meant for a real cluster must not leak into the agent.
func agentEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "NOMAD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func binary(explicit string) (string, error) {
	candidates := []string{explicit, os.Getenv("NOMAD_BIN")}
	if root, err := controlplane.RepoRoot(); err == nil {
		candidates = append(candidates, filepath.Join(root, "bin", "nomad"))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", errors.New("no nomad binary: run `make nomad` (or set NOMAD_BIN)")
}

// freePorts reserves n distinct free TCP ports on loopback, below the kernel's
// ephemeral range (32768 and up here). A port from that range, once an agent
// stops (Restart, Kill), can be handed to any outgoing connection or to another
// suite's agent before this one is relaunched on it; ports picked at random
// from 20000-31999 are almost never taken meanwhile.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("reserve a free port: none free in 20000-31999")
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// killUnder kills every process that belongs to the agent's directory: the
// executors (which Nomad keeps alive across agent restarts on purpose, and whose
// command line names their log file under dir) and the tasks they run (whose
// working directory is their task dir under dir).
func killUnder(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(p), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if belongsTo(p, dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func belongsTo(proc, dir string) bool {
	prefix := dir + string(filepath.Separator)
	if cwd, err := os.Readlink(filepath.Join(proc, "cwd")); err == nil && strings.HasPrefix(cwd, prefix) {
		return true
	}
	b, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	return err == nil && strings.Contains(string(b), prefix)
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+string(filepath.Separator)) {
			points = append(points, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func (a *Agent) tail() string {
	if a.LogPath == "" {
		return ""
	}
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return ""
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
