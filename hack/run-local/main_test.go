package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestQuickstart drives the README's quickstart as a newcomer would: it runs
// run-local (with the real operator binary), follows the printed instructions
// with the real kubectl and the plugin, scrapes the printed metrics URL, then
// presses Ctrl-C and checks that every process it started is gone and its
// kubeconfig and Nomad data are removed.
func TestQuickstart(t *testing.T) {
	g := NewWithT(t)
	bin := t.TempDir()
	for out, pkg := range map[string]string{"run-local": ".", "manager": "../..", "kubectl-nomadrunner": "../../cmd/kubectl-nomadrunner"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, out), pkg)
		if msg, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, msg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kubectl, err := filepath.Abs(envOr("KUBECTL", "../../bin/kubectl"))
	g.Expect(err).NotTo(HaveOccurred())
	tmp := t.TempDir() // run-local's temp dirs go here, so we can see they are removed

	quickstart := exec.Command(filepath.Join(bin, "run-local"), "--manager", filepath.Join(bin, "manager"))
	quickstart.Env = append(os.Environ(), "TMPDIR="+tmp)
	out := &syncBuffer{}
	stdout, err := quickstart.StdoutPipe()
	g.Expect(err).NotTo(HaveOccurred())
	quickstart.Stderr = out
	g.Expect(quickstart.Start()).To(Succeed())
	exited := make(chan error, 1)
	var once sync.Once
	stop := func() { once.Do(func() { _ = quickstart.Process.Signal(syscall.SIGINT) }) }
	defer func() {
		stop()
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = quickstart.Process.Kill()
		}
		if t.Failed() {
			t.Logf("run-local output:\n%s", out.String())
		}
	}()
	instructions := make(chan string, 1)
	go func() {
		var printed strings.Builder
		sc := bufio.NewScanner(io.TeeReader(stdout, out))
		for sc.Scan() {
			printed.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				instructions <- printed.String()
			}
		}
		exited <- quickstart.Wait()
	}()

	var printed string
	select {
	case printed = <-instructions:
	case err := <-exited:
		t.Fatalf("run-local exited before printing its instructions: %v\n%s", err, out.String())
	case <-ctx.Done():
		t.Fatalf("run-local printed no instructions:\n%s", out.String())
	}

	export := regexp.MustCompile(`export KUBECONFIG=(\S+) NOMAD_ADDR=(\S+)`).FindStringSubmatch(printed)
	g.Expect(export).NotTo(BeNil(), printed)
	metricsURL := regexp.MustCompile(`curl -s (http://\S+/metrics)`).FindStringSubmatch(printed)
	g.Expect(metricsURL).NotTo(BeNil(), printed)
	plugin := filepath.Join(bin, "kubectl-nomadrunner")
	env := append(os.Environ(), "KUBECONFIG="+export[1], "NOMAD_ADDR="+export[2], "PATH="+bin+":"+os.Getenv("PATH"))
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
		return string(b)
	}

	// The printed commands, in order.
	run(kubectl, "wait", "--for=condition=Ready", "ee/python", "--timeout=60s")
	got := run(kubectl, "get", "ee,rn")
	g.Expect(strings.Count(got, "Idle")).To(Equal(3), got)
	claimed := run(plugin, "claim", "python", "--holder", "me")
	m := regexp.MustCompile(`runner/(\S+) claimed by me\ntoken: (\S+)`).FindStringSubmatch(claimed)
	g.Expect(m).NotTo(BeNil(), claimed)
	runner, token := m[1], m[2]
	g.Expect(run(plugin, "exec", runner, "--", "sh", "-c", "echo hello from $NOMAD_JOB_NAME")).To(HavePrefix("hello from "))

	resp, err := http.Get(metricsURL[1])
	g.Expect(err).NotTo(HaveOccurred())
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(string(metrics)).To(ContainSubstring(`nomadrunner_runners{environment="python",namespace="default",phase="Claimed"} 1`))

	// Everything run-local started, down to the runners' tasks, before Ctrl-C.
	started := descendants(quickstart.Process.Pid)
	g.Expect(len(started)).To(BeNumerically(">=", 5), "agent, apiserver, etcd, operator and task processes")
	run(plugin, "release", runner, "--token", token)

	stop() // Ctrl-C
	select {
	case err := <-exited:
		g.Expect(err).NotTo(HaveOccurred(), "run-local exits 0 on Ctrl-C")
	case <-time.After(90 * time.Second):
		t.Fatal("run-local did not stop within 90s of Ctrl-C")
	}
	g.Expect(out.String()).To(ContainSubstring("Stopping"))
	g.Eventually(func() []int {
		var alive []int
		for _, pid := range started {
			if running(pid) {
				alive = append(alive, pid)
			}
		}
		return alive
	}).WithTimeout(10*time.Second).Should(BeEmpty(), "processes started by run-local outlive it")
	left, err := os.ReadDir(tmp)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(left).To(BeEmpty(), "temp dirs left behind")
	_, err = os.Stat(export[1])
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the kubeconfig is removed")
}

// descendants lists the PIDs of every live process below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range procs {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		self, _ := strconv.Atoi(filepath.Base(filepath.Dir(stat)))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], self)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// running tells whether pid is a live process (not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
