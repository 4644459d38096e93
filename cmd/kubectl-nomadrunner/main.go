// Command kubectl-nomadrunner is the kubectl plugin for nomad-runner-operator:
// claim, renew, release and list runners, run commands in them and copy files in
// and out through Nomad's alloc exec API. Put it on PATH and call it as
// `kubectl nomadrunner ...`. It reads kubeconfig as kubectl does and Nomad's
// settings from Nomad's environment variables (NOMAD_ADDR, NOMAD_TOKEN, ...).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	nomad "github.com/hashicorp/nomad/api"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

const usage = `kubectl nomadrunner: claim and use prewarmed Nomad runners.

Commands:
  claim ENV [--holder H] [--token T] [--timeout D] [--wait D] [-o name|json]
                                  claim an idle runner of environment ENV; unrenewed for
                                  --timeout (default 10m; 0 = never) it is deleted
  renew RUNNER --token T          record activity, pushing the inactivity deadline back
  release RUNNER --token T        give the runner back (deletes it)
  list [ENV]                      runners with phase, holder and age
  exec RUNNER [-i] [-t] [--task T] -- CMD [ARG...]
                                  run a command in the runner; exits with its code
  cp LOCAL RUNNER:DIR             copy a file or folder into DIR in the runner
  cp RUNNER:PATH LOCALDIR [--max-bytes N] [--max-entries N]
                                  copy a file or folder out of the runner into LOCALDIR;
                                  nothing lands outside LOCALDIR, and the copy fails past
                                  N bytes of files (default 4 GiB) or N entries (default 1000000)

Global flags (anywhere): --kubeconfig F, --context C, -n/--namespace NS, --nomad-address A
`

type globals struct {
	kubeconfig, context, namespace, nomadAddress string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code, err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0, nil
	}
	cmd, args := args[0], args[1:]
	var g globals
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file")
	fs.StringVar(&g.context, "context", "", "kubeconfig context")
	fs.StringVar(&g.namespace, "namespace", "", "namespace (default: the context's)")
	fs.StringVar(&g.namespace, "n", "", "namespace (short)")
	fs.StringVar(&g.nomadAddress, "nomad-address", "", "Nomad address (default $NOMAD_ADDR)")

	switch cmd {
	case "claim":
		holder := fs.String("holder", defaultHolder(), "who claims")
		token := fs.String("token", "", "claim token (default: a new UUID)")
		timeout := fs.Duration("timeout", claim.DefaultInactivityTimeout,
			"inactivity timeout: the operator deletes the runner after this long without a renew; 0 = never (held until released)")
		wait := fs.Duration("wait", 0, "wait up to this long for an idle runner")
		output := fs.String("o", "", "output: name or json")
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return 2, err
		}
		c, ns, err := kubeClient(g)
		if err != nil {
			return 1, err
		}
		if *token == "" {
			*token = uuid.NewString()
		}
		claimCtx := ctx
		if *wait > 0 {
			var cancel context.CancelFunc
			claimCtx, cancel = context.WithTimeout(ctx, *wait)
			defer cancel()
		}
		rn, err := claim.Claim(claimCtx, c, ns, pos[0], claim.Options{
			Holder: *holder, Token: *token, InactivityTimeout: inactivityTimeout(*timeout), Wait: *wait > 0,
		})
		if err != nil {
			return 1, err
		}
		switch *output {
		case "name":
			fmt.Fprintln(stdout, rn.Name)
		case "json":
			return 0, json.NewEncoder(stdout).Encode(rn)
		default:
			fmt.Fprintf(stdout, "runner/%s claimed by %s\ntoken: %s\nnomad job: %s, allocation: %s\n",
				rn.Name, *holder, *token, rn.Status.NomadJobID, rn.Status.AllocationID)
		}
		return 0, nil

	case "renew", "release":
		token := fs.String("token", "", "the claim's token (required)")
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return 2, err
		}
		if *token == "" {
			return 2, errors.New("--token is required")
		}
		c, ns, err := kubeClient(g)
		if err != nil {
			return 1, err
		}
		rn := &v1alpha1.Runner{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: pos[0]}, rn); err != nil {
			return 1, err
		}
		if cmd == "renew" {
			err = claim.Renew(ctx, c, rn, *token)
		} else {
			err = claim.Release(ctx, c, rn, *token)
		}
		if err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "runner/%s %s\n", rn.Name, map[string]string{"renew": "renewed", "release": "released"}[cmd])
		return 0, nil

	case "list":
		pos, err := parse(fs, args, 0, 1)
		if err != nil {
			return 2, err
		}
		c, ns, err := kubeClient(g)
		if err != nil {
			return 1, err
		}
		opts := []client.ListOption{client.InNamespace(ns)}
		if len(pos) == 1 {
			opts = append(opts, client.MatchingLabels{v1alpha1.EnvironmentLabel: pos[0]})
		}
		list := &v1alpha1.RunnerList{}
		if err := c.List(ctx, list, opts...); err != nil {
			return 1, err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "NAME\tENVIRONMENT\tPHASE\tHOLDER\tREASON\tAGE")
		for _, rn := range list.Items {
			holder := "<none>"
			if rn.Status.Claim != nil {
				holder = rn.Status.Claim.Holder
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", rn.Name, rn.Spec.Environment, rn.Status.Phase, holder,
				orNone(rn.Status.Reason), duration.HumanDuration(time.Since(rn.CreationTimestamp.Time)))
		}
		return 0, tw.Flush()

	case "exec":
		interactive := fs.Bool("i", false, "pass stdin to the command")
		tty := fs.Bool("t", false, "allocate a terminal")
		task := fs.String("task", claim.DefaultTask, "task to run in")
		pos, err := parse(fs, args, 2, -1)
		if err != nil {
			return 2, err
		}
		rn, api, err := runnerAndNomad(ctx, g, pos[0])
		if err != nil {
			return 1, err
		}
		opts := claim.ExecOptions{Task: *task, TTY: *tty, Stdout: stdout, Stderr: stderr}
		if *interactive {
			opts.Stdin = stdin
		}
		if *tty {
			restore, sizes := rawTerminal(stdin)
			defer restore()
			opts.TerminalSize = sizes
		}
		return claim.Exec(ctx, api, rn, pos[1:], opts)

	case "cp":
		var lim extractLimits
		fs.Int64Var(&lim.MaxBytes, "max-bytes", defaultMaxBytes, "copying out: most bytes of files in all")
		fs.IntVar(&lim.MaxEntries, "max-entries", defaultMaxEntries, "copying out: most files, folders and symlinks")
		pos, err := parse(fs, args, 2, 2)
		if err != nil {
			return 2, err
		}
		if lim.MaxBytes < 0 || lim.MaxEntries < 0 {
			return 2, errors.New("cp: --max-bytes and --max-entries cannot be negative")
		}
		return 0, copyFiles(ctx, g, pos[0], pos[1], lim, stderr)
	}
	return 2, fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// parse reads flags anywhere among the arguments (as kubectl does); everything
// after "--" is positional. It checks the positional count (max -1: no limit).
func parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		return nil, fmt.Errorf("%s: wrong number of arguments\n%s", fs.Name(), usage)
	}
	return pos, nil
}

func kubeClient(g globals) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	ns := g.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", err
		}
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	return c, ns, err
}

func runnerAndNomad(ctx context.Context, g globals, name string) (*v1alpha1.Runner, *nomad.Client, error) {
	c, ns, err := kubeClient(g)
	if err != nil {
		return nil, nil, err
	}
	rn := &v1alpha1.Runner{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rn); err != nil {
		return nil, nil, err
	}
	cfg := nomad.DefaultConfig()
	if g.nomadAddress != "" {
		cfg.Address = g.nomadAddress
	}
	api, err := nomad.NewClient(cfg)
	return rn, api, err
}

// rawTerminal puts a terminal stdin in raw mode (keys go to the remote shell
// as typed) and reports its size once; restore undoes it. Not a terminal: no-op.
func rawTerminal(stdin io.Reader) (restore func(), sizes <-chan nomad.TerminalSize) {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}, nil
	}
	state, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}, nil
	}
	ch := make(chan nomad.TerminalSize, 1)
	if w, h, err := term.GetSize(int(f.Fd())); err == nil {
		ch <- nomad.TerminalSize{Width: w, Height: h}
	}
	return func() { _ = term.Restore(int(f.Fd()), state) }, ch
}

// inactivityTimeout maps the claim command's --timeout to the library's option.
// The flag defaults to the finite claim.DefaultInactivityTimeout, so a 0 (or
// less) there was typed on purpose: it means never, as it does in the API.
func inactivityTimeout(flag time.Duration) time.Duration {
	if flag <= 0 {
		return claim.NoInactivityTimeout
	}
	return flag
}

func defaultHolder() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "kubectl-nomadrunner"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
