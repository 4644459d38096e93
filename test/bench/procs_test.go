package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The release figures and the drain between repetitions are observed on the
// client side, in /proc, not in Nomad's API: a purged job is gone from the API
// at once, while its task may go on running for a long time. A task of the
// bench's agent is a process whose environment holds NOMAD_ALLOC_ID and a
// NOMAD_ALLOC_DIR under the agent's allocation directory (so tasks of other
// Nomad agents on a shared machine are never counted); an allocation's helper
// processes (the executor) name a path under that directory on their command
// line.

// procKind is what a process is to the bench's Nomad agent.
type procKind int

const (
	notOurs procKind = iota
	allocTask
	allocHelper
)

// classify tells from a process's command line and environment (both
// NUL-separated, as /proc gives them) whether it belongs to an allocation
// under allocDir (which ends in a slash), and to which.
func classify(allocDir string, cmdline, environ []byte) (procKind, string) {
	if i := bytes.Index(cmdline, []byte(allocDir)); i >= 0 {
		if id := firstElement(string(cmdline[i+len(allocDir):])); id != "" {
			return allocHelper, id
		}
	}
	var id, dir string
	for _, kv := range bytes.Split(environ, []byte{0}) {
		switch {
		case bytes.HasPrefix(kv, []byte("NOMAD_ALLOC_ID=")):
			id = string(kv[len("NOMAD_ALLOC_ID="):])
		case bytes.HasPrefix(kv, []byte("NOMAD_ALLOC_DIR=")):
			dir = string(kv[len("NOMAD_ALLOC_DIR="):])
		}
	}
	if id != "" && strings.HasPrefix(dir, allocDir) {
		return allocTask, id
	}
	return notOurs, ""
}

// firstElement is the first path element of p, "" when p has none.
func firstElement(p string) string {
	if i := strings.IndexAny(p, "/\x00 "); i >= 0 {
		p = p[:i]
	}
	return p
}

// startedSecondsAgo reads from a /proc/PID/stat line how long ago the process
// started, given the system's uptime in seconds.
func startedSecondsAgo(stat string, uptime float64) (float64, bool) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, false
	}
	// After "pid (comm) ": state is field 3, starttime field 22.
	f := strings.Fields(stat[end+1:])
	if len(f) < 20 {
		return 0, false
	}
	ticks, err := strconv.ParseFloat(f[19], 64)
	if err != nil {
		return 0, false
	}
	return uptime - ticks/ticksPerSecond, true
}

type procEntry struct {
	kind  procKind
	alloc string
}

// allocProcs finds the processes of one Nomad agent's allocations. It
// remembers what each process is, so a scan reads only new processes; a
// process younger than a second is read again at each scan, since a task is
// forked from its executor and only becomes itself at exec.
type allocProcs struct {
	allocDir string
	known    map[int]procEntry
}

func newAllocProcs(agentDataDir string) *allocProcs {
	return &allocProcs{allocDir: filepath.Join(agentDataDir, "alloc") + "/", known: map[int]procEntry{}}
}

// procSnapshot is one scan: per allocation, its task and helper processes.
type procSnapshot struct {
	tasks   map[string][]int
	helpers map[string][]int
}

func (s procSnapshot) allocs() map[string]bool {
	out := map[string]bool{}
	for a := range s.tasks {
		out[a] = true
	}
	for a := range s.helpers {
		out[a] = true
	}
	return out
}

func (w *allocProcs) scan() procSnapshot {
	snap := procSnapshot{tasks: map[string][]int{}, helpers: map[string][]int{}}
	d, err := os.Open("/proc")
	if err != nil {
		return snap
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	uptime := readUptime()
	alive := make(map[int]bool, len(names))
	self := os.Getpid()
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == self {
			continue
		}
		alive[pid] = true
		e, ok := w.known[pid]
		if !ok {
			e, ok = w.read(pid, uptime)
			if ok {
				w.known[pid] = e
			}
		}
		switch e.kind {
		case allocTask:
			snap.tasks[e.alloc] = append(snap.tasks[e.alloc], pid)
		case allocHelper:
			snap.helpers[e.alloc] = append(snap.helpers[e.alloc], pid)
		}
	}
	for pid := range w.known {
		if !alive[pid] {
			delete(w.known, pid)
		}
	}
	return snap
}

// read classifies one process; ok is false when the answer may still change
// (a young process, or one that could not be read).
func (w *allocProcs) read(pid int, uptime float64) (procEntry, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procEntry{}, false
	}
	age, ok := startedSecondsAgo(string(stat), uptime)
	settled := ok && age > 1
	cmdline, _ := os.ReadFile(dir + "/cmdline")
	environ, _ := os.ReadFile(dir + "/environ")
	kind, alloc := classify(w.allocDir, cmdline, environ)
	return procEntry{kind: kind, alloc: alloc}, settled
}

func readUptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// procPoll is how often the bench looks at /proc while it waits for
// processes to end: the resolution of the release figures.
const procPoll = 100 * time.Millisecond

// waitTasksGone polls until no task process of the given allocations runs,
// or until the deadline. It returns when each allocation's task was first
// seen gone, and the allocations whose task still ran at the deadline.
func (w *allocProcs) waitTasksGone(ctx context.Context, allocs []string, deadline time.Time) (map[string]time.Time, []string, error) {
	pending := map[string]bool{}
	for _, a := range allocs {
		pending[a] = true
	}
	gone := map[string]time.Time{}
	for {
		snap := w.scan()
		now := time.Now()
		for a := range pending {
			if len(snap.tasks[a]) == 0 {
				gone[a] = now
				delete(pending, a)
			}
		}
		if len(pending) == 0 {
			return gone, nil, nil
		}
		if now.After(deadline) {
			left := make([]string, 0, len(pending))
			for a := range pending {
				left = append(left, a)
			}
			sort.Strings(left)
			return gone, left, nil
		}
		select {
		case <-ctx.Done():
			return gone, nil, ctx.Err()
		case <-time.After(procPoll):
		}
	}
}

// withTasks keeps the allocations that have a task process now: only those
// can be timed to its end.
func (w *allocProcs) withTasks(allocs []string) (have, missing []string) {
	snap := w.scan()
	for _, a := range allocs {
		if len(snap.tasks[a]) > 0 {
			have = append(have, a)
		} else {
			missing = append(missing, a)
		}
	}
	return have, missing
}

// leftovers are the allocations with any process on the node but those in keep.
func (w *allocProcs) leftovers(keep map[string]bool) []string {
	var out []string
	for a := range w.scan().allocs() {
		if !keep[a] {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// kill ends every process of the given allocations (SIGKILL) and says how
// many it signalled.
func (w *allocProcs) kill(allocs []string) int {
	want := map[string]bool{}
	for _, a := range allocs {
		want[a] = true
	}
	snap := w.scan()
	n := 0
	for _, m := range []map[string][]int{snap.tasks, snap.helpers} {
		for a, pids := range m {
			if !want[a] {
				continue
			}
			for _, pid := range pids {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					n++
				}
			}
		}
	}
	return n
}

// describe names a few allocations for a failure's reason.
func describe(allocs []string) string {
	if len(allocs) <= 3 {
		return strings.Join(allocs, ", ")
	}
	return fmt.Sprintf("%s, ... (%d in all)", strings.Join(allocs[:3], ", "), len(allocs))
}
