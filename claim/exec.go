package claim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// DefaultTask is the task of the operator's runner jobs that commands run in.
const DefaultTask = "runner"

// ExecOptions of a command run in a runner.
type ExecOptions struct {
	// Task to run in (default DefaultTask).
	Task string
	// TTY allocates a terminal; TerminalSize then carries its size changes.
	TTY          bool
	TerminalSize <-chan nomad.TerminalSize
	Stdin        io.Reader
	Stdout       io.Writer
	Stderr       io.Writer
}

// Exec runs command in the runner's allocation through Nomad's alloc exec API
// and returns its exit code. The runner must have a running allocation
// (Idle or Claimed).
func Exec(ctx context.Context, api *nomad.Client, rn *v1alpha1.Runner, command []string, opts ExecOptions) (int, error) {
	if len(command) == 0 {
		return 0, errors.New("exec: no command")
	}
	if rn.Status.AllocationID == "" {
		return 0, fmt.Errorf("exec in runner %s/%s: it has no allocation (phase %s)", rn.Namespace, rn.Name, rn.Status.Phase)
	}
	task := opts.Task
	if task == "" {
		task = DefaultTask
	}
	q := (&nomad.QueryOptions{Namespace: rn.Status.NomadNamespace}).WithContext(ctx)
	alloc, _, err := api.Allocations().Info(rn.Status.AllocationID, q)
	if err != nil {
		return 0, fmt.Errorf("read allocation %s of runner %s: %w", rn.Status.AllocationID, rn.Name, err)
	}
	stdin := opts.Stdin
	if stdin == nil {
		stdin = eofReader{}
	}
	stdout, stderr := opts.Stdout, opts.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	code, err := api.Allocations().Exec(ctx, alloc, task, opts.TTY, command, stdin, stdout, stderr, opts.TerminalSize, q)
	if err != nil {
		return code, fmt.Errorf("exec in runner %s/%s: %w", rn.Namespace, rn.Name, err)
	}
	return code, nil
}

// CopyTo unpacks a tar stream (as `tar -c` writes it) into dir inside the
// runner, creating dir. It needs tar in the runner's image.
func CopyTo(ctx context.Context, api *nomad.Client, rn *v1alpha1.Runner, tarStream io.Reader, dir string, stderr io.Writer) error {
	return runTar(ctx, api, rn, copyToCommand(dir), ExecOptions{Stdin: tarStream, Stderr: stderr})
}

func copyToCommand(dir string) []string {
	return []string{"sh", "-c", `mkdir -p "$1" && tar -xf - -C "$1"`, "sh", operand(dir)}
}

// CopyFrom writes a tar stream of path inside the runner (a file or a folder,
// stored under its base name) to w. It needs tar in the runner's image.
func CopyFrom(ctx context.Context, api *nomad.Client, rn *v1alpha1.Runner, p string, w io.Writer, stderr io.Writer) error {
	return runTar(ctx, api, rn, copyFromCommand(p), ExecOptions{Stdout: w, Stderr: stderr})
}

func copyFromCommand(p string) []string {
	p = path.Clean(p)
	return []string{"tar", "-cf", "-", "-C", operand(path.Dir(p)), operand(path.Base(p))}
}

// operand keeps a path the caller gave from being read as an option by the
// runner's mkdir or tar: one starting with "-" gets a "./" in front, which
// every tar and mkdir understand (unlike "--"), and an empty one means ".".
func operand(p string) string {
	switch {
	case p == "":
		return "."
	case strings.HasPrefix(p, "-"):
		return "./" + p
	}
	return p
}

func runTar(ctx context.Context, api *nomad.Client, rn *v1alpha1.Runner, cmd []string, opts ExecOptions) error {
	code, err := Exec(ctx, api, rn, cmd, opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s in runner %s/%s exited with %d", cmd[0], rn.Namespace, rn.Name, code)
	}
	return nil
}

// eofReader is an empty stdin: the exec session ends its input at once.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
