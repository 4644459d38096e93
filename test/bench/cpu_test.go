package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The CPU split says where a benchmark's seconds of CPU went, by component:
// the operator, the API server, etcd, Nomad (its agent and everything it
// starts: executors, logmon, the tasks) and the harness itself. On a machine
// of 2 cores it tells what is the operator's cost and what is the machine's.

// ticksPerSecond is USER_HZ, 100 on every Linux this runs on.
const ticksPerSecond = 100

type procStat struct {
	pid, ppid int
	comm      string
	// own is the process's own CPU; reaped is what its waited-for children
	// used (cutime+cstime), so a task that ended still counts for Nomad.
	own, reaped float64
}

func readProcs() map[int]procStat {
	out := map[int]procStat{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		// After "pid (comm) ": state ppid ... utime(14) stime cutime cstime.
		f := strings.Fields(s[end+1:])
		if len(f) < 15 {
			continue
		}
		num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v / ticksPerSecond }
		ppid, _ := strconv.Atoi(f[1])
		out[pid] = procStat{pid: pid, ppid: ppid, comm: s[open+1 : end],
			own: num(11) + num(12), reaped: num(13) + num(14)}
	}
	return out
}

// childrenOf maps each pid to the pids of its children.
func childrenOf(procs map[int]procStat) map[int][]int {
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	return children
}

// cpuByComponent is the CPU seconds used so far by each process the harness
// started, with all its descendants, named by what the process is; the
// harness's own seconds are "harness".
func cpuByComponent(operatorPID int) map[string]float64 {
	procs := readProcs()
	children := childrenOf(procs)
	var tree func(pid int) float64
	tree = func(pid int) float64 {
		t := procs[pid].own + procs[pid].reaped
		for _, c := range children[pid] {
			t += tree(c)
		}
		return t
	}
	self := os.Getpid()
	out := map[string]float64{"harness": procs[self].own}
	for _, c := range children[self] {
		name := component(procs[c].comm)
		if c == operatorPID {
			name = "operator"
		}
		out[name] += tree(c)
	}
	return out
}

func component(comm string) string {
	switch {
	case strings.HasPrefix(comm, "kube-apiserver"):
		return "kube-apiserver"
	case strings.HasPrefix(comm, "etcd"):
		return "etcd"
	case strings.HasPrefix(comm, "nomad"):
		return "nomad"
	default:
		return "other"
	}
}

// cpuSplit is what each component used between two readings.
type cpuSplit map[string]float64

func cpuSince(before map[string]float64, operatorPID int) cpuSplit {
	after := cpuByComponent(operatorPID)
	out := cpuSplit{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

func (s cpuSplit) total() float64 {
	t := 0.0
	for _, v := range s {
		t += v
	}
	return t
}

// add records each component's seconds divided by per (a claim, a runner) as
// figures named prefix_<component>.
func (s cpuSplit) add(r *results, prefix string, per float64) {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.add(prefix+"_"+strings.ReplaceAll(k, "-", "_"), s[k]/per)
	}
	r.add(prefix+"_total", s.total()/per)
}

// deprioritiseNomad runs Nomad (the agent and everything it starts:
// executors, logmon, the tasks) at the lowest CPU priority (nice 19), so the
// control plane (API server, etcd, operator, harness) is served first, as if
// it ran on machines of its own: in production the tasks start on Nomad's
// client nodes. Nomad still has every CPU the control plane leaves idle; a
// hard split (pinning Nomad to one of two CPUs) left it unable even to stop
// 100 tasks within minutes. With on false, Nomad runs at the normal priority
// again. Threads and processes started later inherit the priority.
func deprioritiseNomad(on bool) error {
	prio := 0
	if on {
		prio = 19
	}
	procs := readProcs()
	children := childrenOf(procs)
	var set func(pid int) error
	set = func(pid int) error {
		tasks, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
		for _, t := range tasks {
			tid, _ := strconv.Atoi(t.Name())
			// On Linux the priority is per thread; one that ended meanwhile is fine.
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, prio); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("set priority of thread %d of %d: %w", tid, pid, err)
			}
		}
		for _, c := range children[pid] {
			if err := set(c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range children[os.Getpid()] {
		if component(procs[c].comm) == "nomad" {
			if err := set(c); err != nil {
				return err
			}
		}
	}
	return nil
}
