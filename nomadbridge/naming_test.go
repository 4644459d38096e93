package nomadbridge_test

import (
	"strings"
	"testing"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func TestRunnerJobIDRoundTrip(t *testing.T) {
	for _, env := range []string{"python", "py-3-13", "a", strings.Repeat("x", 63)} {
		id := nomadbridge.NewRunnerJobID(env)
		got, u, ok := nomadbridge.ParseRunnerJobID(id)
		if !ok || got != env || u.String() != id[len(id)-36:] {
			t.Errorf("ParseRunnerJobID(%q) = %q, %v, %v; want %q", id, got, u, ok, env)
		}
	}
	if a, b := nomadbridge.NewRunnerJobID("python"), nomadbridge.NewRunnerJobID("python"); a == b {
		t.Errorf("two job IDs are equal: %s", a)
	}
}

func TestParseRunnerJobIDRejectsOtherIDs(t *testing.T) {
	for _, id := range []string{
		"",
		"python",
		"python-",
		"-0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e", // no environment
		"python-0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2",    // UUID too short
		"python_0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e",   // wrong separator
		"python-0b6f6a556a3e4f5e9a4e0c2c6b1c9d2e0000",   // no dashes in the UUID
		"python-zzzzzzzz-6a3e-4f5e-9a4e-0c2c6b1c9d2e",   // not hex
		"python -0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e",  // space
		"python-{0b6f6a55-6a3e-4f5e-9a4e-0c2c6b1c9d2e}", // braces
	} {
		if env, _, ok := nomadbridge.ParseRunnerJobID(id); ok {
			t.Errorf("ParseRunnerJobID(%q) accepted it as environment %q", id, env)
		}
	}
}

func TestRunnerMeta(t *testing.T) {
	full := nomadbridge.RunnerMeta{Instance: "prod", Namespace: "ns", Environment: "python", Runner: "python-x7k2p", UID: "4f1c"}
	got, ok := nomadbridge.ParseRunnerMeta(full.Map())
	if !ok || got != full {
		t.Fatalf("ParseRunnerMeta(Map()) = %+v, %v; want %+v", got, ok, full)
	}
	for _, key := range []string{nomadbridge.MetaInstance, nomadbridge.MetaNamespace, nomadbridge.MetaEnvironment, nomadbridge.MetaRunner} {
		meta := full.Map()
		meta["team"] = "data" // foreign keys do not matter
		delete(meta, key)
		if _, ok := nomadbridge.ParseRunnerMeta(meta); ok {
			t.Errorf("meta without %s was taken as ours", key)
		}
		meta[key] = ""
		if _, ok := nomadbridge.ParseRunnerMeta(meta); ok {
			t.Errorf("meta with an empty %s was taken as ours", key)
		}
	}
	if _, ok := nomadbridge.ParseRunnerMeta(nil); ok {
		t.Error("nil meta was taken as ours")
	}

	// A job registered before the UID was recorded is still ours (the orphan
	// collector must find it), with an empty UID.
	legacy := full.Map()
	delete(legacy, nomadbridge.MetaRunnerUID)
	got, ok = nomadbridge.ParseRunnerMeta(legacy)
	if want := (nomadbridge.RunnerMeta{Instance: "prod", Namespace: "ns", Environment: "python", Runner: "python-x7k2p"}); !ok || got != want {
		t.Errorf("ParseRunnerMeta(without uid) = %+v, %v; want %+v", got, ok, want)
	}
	if _, has := got.Map()[nomadbridge.MetaRunnerUID]; has {
		t.Error("Map() of a meta without UID carries an empty UID key")
	}
}

func TestMatchOwner(t *testing.T) {
	runner := nomadbridge.RunnerMeta{Instance: "prod", Namespace: "ns", Environment: "python", Runner: "python-x7k2p", UID: "uid-1"}
	with := func(f func(m *nomadbridge.RunnerMeta)) map[string]string {
		m := runner
		f(&m)
		return m.Map()
	}
	legacyOwner := runner
	legacyOwner.UID = ""
	for _, tc := range []struct {
		name      string
		owner     nomadbridge.RunnerMeta
		job       map[string]string
		ok        bool
		whoseHint string
	}{
		{name: "the runner's own job", owner: runner, job: runner.Map(), ok: true},
		{name: "no meta at all", owner: runner, job: nil, whoseHint: "no runner meta"},
		{name: "foreign meta only", owner: runner, job: map[string]string{"team": "payments"}, whoseHint: "no runner meta"},
		{name: "another instance", owner: runner, job: with(func(m *nomadbridge.RunnerMeta) { m.Instance = "staging" }), whoseHint: `instance "staging"`},
		{name: "another namespace", owner: runner, job: with(func(m *nomadbridge.RunnerMeta) { m.Namespace = "team-b" }), whoseHint: "team-b/python-x7k2p"},
		{name: "another environment", owner: runner, job: with(func(m *nomadbridge.RunnerMeta) { m.Environment = "node" }), whoseHint: "ns/python-x7k2p"},
		{name: "another runner", owner: runner, job: with(func(m *nomadbridge.RunnerMeta) { m.Runner = "python-aaaaa" }), whoseHint: "ns/python-aaaaa"},
		{name: "a Runner of the same name, another UID", owner: runner, job: with(func(m *nomadbridge.RunnerMeta) { m.UID = "uid-2" }), whoseHint: "uid-2"},
		{name: "a job without UID, to a Runner", owner: runner, job: legacyOwner.Map(), whoseHint: "ns/python-x7k2p"},
		{name: "a job without UID, to the listed meta (orphan collector)", owner: legacyOwner, job: legacyOwner.Map(), ok: true},
		{name: "a job with UID, to the listed meta without it", owner: legacyOwner, job: runner.Map(), ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, whose := nomadbridge.MatchOwner(tc.owner, tc.job)
			if ok != tc.ok {
				t.Fatalf("MatchOwner = %v (%q), want %v", ok, whose, tc.ok)
			}
			if !ok && !strings.Contains(whose, tc.whoseHint) {
				t.Errorf("whose = %q, want it to mention %q", whose, tc.whoseHint)
			}
		})
	}
}
