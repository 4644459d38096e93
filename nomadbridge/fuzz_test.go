package nomadbridge

import (
	"errors"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// FuzzRenderJSONTemplate feeds arbitrary JSON templates (and spec values)
// through decoding, rendering, ForRunner and hashing. Whatever the input, it
// must not panic; a rejected template must be ErrInvalidJob (the environment
// reports it), and an accepted one must carry the spec's resources, the
// no-restart policy and the runner's ID and meta, and hash stably.
func FuzzRenderJSONTemplate(f *testing.F) {
	for _, seed := range []string{
		`{"ID":"t","TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/sleep"}}]}]}`,
		`{"Job":{"ID":"t","TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"docker"}]}]}}`,
		`{"Type":"batch","TaskGroups":[{"Tasks":[{"Driver":"docker"}]}]}`,
		`{"TaskGroups":[{"Tasks":[]}]}`,
		`{"TaskGroups":[{"Tasks":[{"Driver":"docker","Resources":{"CPU":-5,"MemoryMB":null}}]},{"Tasks":[{}]}]}`,
		`{"TaskGroups":[{"Count":7,"Networks":[{"Mode":"host","DynamicPorts":[{"Label":"port-80"}]}],"Tasks":[{"Driver":"docker","Config":{"network_mode":"host"}}]}]}`,
		`{"TaskGroups":null}`, `{}`, `{"Job":null}`, `[]`, `{"TaskGroups":[null]}`, `{"TaskGroups":[{"Tasks":[null]}]}`,
		`{"Meta":{"nomadrunner_instance":"evil"},"TaskGroups":[{"Tasks":[{"Driver":"exec"}]}]}`,
	} {
		f.Add(seed, "python:3.13", 50, 32, true, uint16(8080))
	}
	f.Fuzz(func(t *testing.T, src, image string, cpu, mem int, network bool, port uint16) {
		template, err := DecodeJSONTemplate(src)
		if err != nil {
			if !errors.Is(err, ErrInvalidJob) {
				t.Fatalf("decode error is not ErrInvalidJob: %v", err)
			}
			return
		}
		spec := EnvironmentSpec{Image: image, CPU: cpu, MemoryMB: mem, NetworkAccess: network}
		if network && port > 0 {
			spec.ExposedPorts = []int{int(port)}
		}
		job, err := RenderEnvironmentJob(template, spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidJob) {
				t.Fatalf("render error is not ErrInvalidJob: %v", err)
			}
			return
		}
		if len(job.TaskGroups) != 1 || job.TaskGroups[0] == nil || len(job.TaskGroups[0].Tasks) == 0 {
			t.Fatalf("rendered job is not one group with tasks: %+v", job.TaskGroups)
		}
		meta := RunnerMeta{Instance: "i", Namespace: "ns", Environment: "env", Runner: "env-x", UID: "u"}
		id := NewRunnerJobID("env")
		runner := ForRunner(job, id, meta)
		if runner.ID == nil || *runner.ID != id {
			t.Fatalf("runner job ID %v, want %s", runner.ID, id)
		}
		if got, ok := ParseRunnerMeta(runner.Meta); !ok || got != meta {
			t.Fatalf("runner meta %v does not name its runner (%v)", runner.Meta, meta)
		}
		h1, err := TemplateHash(job)
		if err != nil {
			t.Fatalf("hash: %v", err)
		}
		h2, _ := TemplateHash(job)
		if h1 != h2 {
			t.Fatalf("hash unstable: %s vs %s", h1, h2)
		}
		// Rendering must not have modified the decoded template.
		again, _ := DecodeJSONTemplate(src)
		if h3, err := TemplateHash(again); err == nil {
			if h4, _ := TemplateHash(template); h3 != h4 {
				t.Fatalf("RenderEnvironmentJob modified its template")
			}
		}
		_ = nomad.JobTypeService
	})
}

// FuzzParseRunnerJobID: any string either parses into an environment and UUID
// that NewRunnerJobID-style formatting gives back exactly, or is rejected;
// never a panic. And every ID NewRunnerJobID makes parses back.
func FuzzParseRunnerJobID(f *testing.F) {
	for _, seed := range []string{
		"python-0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
		"a-b-c-0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
		"-0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
		" x-0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
		"python-{0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a}",
		"python-urn:uuid:0b9c3c2e-5f5e-4c2a-9d8b-1f",
		"python", "", "ä-0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
		"python_0b9c3c2e-5f5e-4c2a-9d8b-1f2e3d4c5b6a",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, jobID string) {
		env, id, ok := ParseRunnerJobID(jobID)
		if !ok {
			if env != "" {
				t.Fatalf("rejected %q but returned environment %q", jobID, env)
			}
			return
		}
		// The environment is exact; the UUID may come in upper case (uuid.Parse
		// accepts it; harmless: runners are found by the exact job ID).
		if env+"-"+id.String() != jobID[:len(env)+1]+strings.ToLower(jobID[len(env)+1:]) {
			t.Fatalf("%q parsed into %q and %s, which do not give it back", jobID, env, id)
		}
		if env != strings.TrimSpace(env) {
			t.Fatalf("%q parsed into an environment with surrounding space %q", jobID, env)
		}
		if env != "" {
			if e2, id2, ok := ParseRunnerJobID(NewRunnerJobID(env)); !ok || e2 != env || id2 == id {
				t.Fatalf("a fresh ID of environment %q does not parse back (%q, %v)", env, e2, ok)
			}
		}
	})
}

// FuzzParseRunnerMeta: ok only when the instance, namespace, environment and
// runner keys are present and non-empty (the UID is optional), and then Map
// gives the same entries back; a job matches its own meta as owner.
func FuzzParseRunnerMeta(f *testing.F) {
	f.Add("i", "ns", "env", "r", "uid", "extra")
	f.Add("", "ns", "env", "r", "", "")
	f.Add("i", "ns", "env", "r", "", "")
	f.Fuzz(func(t *testing.T, instance, ns, env, runner, uid, extra string) {
		meta := map[string]string{MetaInstance: instance, MetaNamespace: ns, MetaEnvironment: env, MetaRunner: runner, MetaRunnerUID: uid, "other": extra}
		m, ok := ParseRunnerMeta(meta)
		want := instance != "" && ns != "" && env != "" && runner != ""
		if ok != want {
			t.Fatalf("ParseRunnerMeta(%v) ok=%v, want %v", meta, ok, want)
		}
		if ok {
			for k, v := range m.Map() {
				if meta[k] != v {
					t.Fatalf("Map()[%s]=%q, want %q", k, v, meta[k])
				}
			}
			if match, whose := MatchOwner(m, meta); !match {
				t.Fatalf("a job does not match its own meta %+v: %s", m, whose)
			}
		}
	})
}
