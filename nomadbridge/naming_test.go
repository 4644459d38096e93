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
	full := nomadbridge.RunnerMeta{Instance: "prod", Namespace: "ns", Environment: "python", Runner: "python-x7k2p"}
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
}
