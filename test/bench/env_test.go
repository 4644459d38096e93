package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// env is one benchmark run's world: a real control plane, a real Nomad dev
// agent behind a counting proxy, and the operator as its own process.
type env struct {
	root    string
	cp      *controlplane.ControlPlane
	agent   *nomaddev.Agent
	nomad   *nomad.Client // direct to the agent (the harness's own calls, uncounted)
	counter *nomaddev.Counter
	proxy   *httptest.Server
	procs   *allocProcs // the agent's allocation processes, from /proc

	direct    client.Client // writes and reads straight to the API server
	clientset kubernetes.Interface
	cached    client.Client // reads from an informer cache, writes direct (how a claimer service runs)
	// claimer claims and releases as a claimer service does: reads from the
	// same cache, writes as a non-admin user bound to the shipped claimer role,
	// so every claim passes the shipped admission policies (an admin's would
	// skip them).
	claimer client.Client

	op         *exec.Cmd
	opLog      string
	metricsURL string
	pprofURL   string
}

// startEnv starts the world; what it started is stopped by t's cleanups, also
// when it fails part way.
func startEnv(ctx context.Context, t *testing.T, root string) (*env, error) {
	t.Helper()
	e := &env{root: root}
	var err error
	dir := t.TempDir()
	bin := filepath.Join(dir, "manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build manager: %w\n%s", err, out)
	}

	// 200 runners of cpu 50 / memory 32 plus the claimed ones and the raw
	// anchor's jobs: raise the dev node well above the default.
	// Nothing is measured yet: the starts below get fixed, generous bounds.
	e.agent, err = nomaddev.Start(ctx, nomaddev.Options{CPUTotalCompute: 80000, MemoryTotalMB: 65536, StartTimeout: 5 * time.Minute})
	t.Cleanup(e.agent.Stop)
	if err != nil {
		return nil, err
	}
	// The agent's data dir lies beside its log (see nomaddev.Agent.LogPath).
	e.procs = newAllocProcs(filepath.Join(filepath.Dir(e.agent.LogPath), "data"))
	if e.nomad, err = e.agent.Client(); err != nil {
		return nil, err
	}
	e.counter = nomaddev.NewCounter()
	h, err := e.counter.Proxy(e.agent.Addr)
	if err != nil {
		return nil, err
	}
	e.proxy = httptest.NewServer(h)
	t.Cleanup(e.proxy.Close)

	if e.cp, err = controlplane.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(e.cp.Stop)
	// The dev agent runs raw_exec only, which the built-in policy refuses.
	if err := controlplane.AllowRawExec(context.Background(), e.cp.Client); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(e.cp.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side throttling in the harness
	if e.direct, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme()}); err != nil {
		return nil, err
	}
	if e.clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		return nil, err
	}
	// A claimer service's cache: claim.Claim selects on the phase through its index.
	if err := claim.IndexFields(ctx, c); err != nil {
		return nil, err
	}
	if _, err := c.GetInformer(ctx, &v1alpha1.Runner{}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, errors.New("harness cache did not sync")
	}
	if e.cached, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme(), Cache: &client.CacheOptions{Reader: c}}); err != nil {
		return nil, err
	}
	claimerCfg, err := claimerConfig(ctx, e.cp, e.root)
	if err != nil {
		return nil, err
	}
	if e.claimer, err = client.New(claimerCfg, client.Options{Scheme: controlplane.Scheme(), Cache: &client.CacheOptions{Reader: c}}); err != nil {
		return nil, err
	}

	port, pprofPort := freePort(), freePort()
	e.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	e.pprofURL = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", pprofPort)
	e.opLog = filepath.Join(dir, "operator.log")
	logFile, err := os.Create(e.opLog)
	if err != nil {
		return nil, err
	}
	e.op = exec.Command(bin,
		"--metrics-secure=false", fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port),
		"--health-probe-bind-address=0", fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pprofPort),
		"--orphan-collection-interval=1h",
		"--operator-instance=bench",
		"--zap-devel=false", "--zap-log-level=info")
	e.op.Stdout, e.op.Stderr = logFile, logFile
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOMAD_") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			e.op.Env = append(e.op.Env, kv)
		}
	}
	e.op.Env = append(e.op.Env, "KUBECONFIG="+e.cp.Kubeconfig, "NOMAD_ADDR="+e.proxy.URL)
	if err := e.op.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		e.resume()
		_ = e.op.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = e.op.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = e.op.Process.Kill()
			<-done
		}
		logFile.Close()
	})
	// Ready when its metrics answer and it has opened the event stream.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := e.metric("controller_runtime_reconcile_total", ""); err == nil && e.counter.Count("GET /v1/event/stream") > 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("operator did not start within 3 minutes; log %s:\n%s", e.opLog, tail(e.opLog))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return e, nil
}

// pause stops the operator process (SIGSTOP); resume continues it.
func (e *env) pause()  { _ = e.op.Process.Signal(syscall.SIGSTOP) }
func (e *env) resume() { _ = e.op.Process.Signal(syscall.SIGCONT) }

// scrapeClient gives up on an operator that does not answer (one paused by
// mistake) instead of hanging the run.
var scrapeClient = &http.Client{Timeout: 30 * time.Second}

// metric sums the samples of a metric family whose label text contains match.
func (e *env) metric(name, match string) (float64, error) {
	resp, err := scrapeClient.Get(e.metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found && match == "" {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	return sum, sc.Err()
}

// apiRequests is the operator's API server requests so far, by HTTP method,
// and those answered 409 Conflict.
func (e *env) apiRequests() map[string]float64 {
	out := map[string]float64{}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		out[m], _ = e.metric("rest_client_requests_total", `method="`+m+`"`)
	}
	// Writes the API server refused for a stale resourceVersion (any method).
	out["409"], _ = e.metric("rest_client_requests_total", `code="409"`)
	return out
}

// profile fetches a CPU profile of the operator over the next d into
// $BENCH_PROFILE_DIR/name.pprof, when that folder is set (for `go tool pprof`).
// The returned func waits for it.
func (e *env) profile(name string, d time.Duration) (wait func()) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("%s/profile?seconds=%d", e.pprofURL, int(d.Seconds())))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if f, err := os.Create(filepath.Join(dir, name+".pprof")); err == nil {
			_, _ = io.Copy(f, resp.Body)
			f.Close()
		}
	}()
	return func() { <-done }
}

// cpu reads the CPU seconds of every component so far (see cpuByComponent).
func (e *env) cpu() map[string]float64 { return cpuByComponent(e.op.Process.Pid) }

// reading is what the cost of a phase is measured from.
type reading struct {
	cpu, api, writes map[string]float64
}

func (e *env) read(ctx context.Context) reading {
	return reading{cpu: e.cpu(), api: e.apiRequests(), writes: e.apiserverWrites(ctx)}
}

// cost records what a phase of the benchmark cost per runner (or per claim)
// since the reading r0: CPU by component, the operator's API requests by
// method, and the API server's write requests by resource.
func (e *env) cost(ctx context.Context, r *results, phase string, r0 reading, per int) {
	cpuSince(r0.cpu, e.op.Process.Pid).add(r, cpuPrefix+phase, float64(per)/1000)
	for m, v := range e.apiRequests() {
		if d := v - r0.api[m]; d > 0 || r0.api[m] > 0 {
			r.add(apiPrefix+m+"_per_runner_"+phase, d/float64(per))
		}
	}
	for k, v := range e.apiserverWrites(ctx) {
		if d := v - r0.writes[k]; d > 0 {
			r.add(writesPrefix+phase+" "+k, d/float64(per))
		}
	}
}

// apiserverWrites reads the API server's own count of write requests so far,
// by verb and resource ("PATCH runners/status"): what the operator's
// method counts cannot tell apart (a status write, an event, a finalizer).
// It counts every client, the harness's claims included.
func (e *env) apiserverWrites(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	raw, err := e.clientset.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := map[string]string{}
		end := strings.LastIndex(line, "}")
		for _, kv := range strings.Split(line[len("apiserver_request_total{"):end], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		switch labels["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		key := labels["verb"] + " " + labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err == nil {
			out[key] += v
		}
	}
	return out
}

func (e *env) runnerReconciles() float64 {
	v, _ := e.metric("controller_runtime_reconcile_total", `controller="runner"`)
	return v
}

// memory reads the operator's RSS and peak RSS (from /proc) and Go heap in use
// (from its metrics), in bytes.
func (e *env) memory() (rss, hwm, heap float64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.op.Process.Pid))
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			if f[0] == "VmRSS:" {
				rss = kb * 1024
			} else {
				hwm = kb * 1024
			}
		}
	}
	heap, _ = e.metric("go_memstats_heap_inuse_bytes", "")
	return rss, hwm, heap
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// claimerConfig binds the shipped claimer ClusterRole (config/rbac) to a new
// user in every namespace and returns that user's config, unthrottled.
func claimerConfig(ctx context.Context, cp *controlplane.ControlPlane, root string) (*rest.Config, error) {
	raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", "claimer_role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(raw, role); err != nil {
		return nil, fmt.Errorf("read claimer role: %w", err)
	}
	const user = "bench-claimer"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := cp.Client.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("install the claimer role: %w", err)
		}
	}
	u, err := cp.Env.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		return nil, err
	}
	cfg := u.Config()
	cfg.QPS, cfg.Burst = -1, 0
	return cfg, nil
}
