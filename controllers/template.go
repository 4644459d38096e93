package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	nomad "github.com/hashicorp/nomad/api"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

// Renderer turns an ExecutionEnvironment into its environment job (validated by
// Nomad) and template hash, once per generation: both controllers ask for it on
// every reconcile, and parsing and validating are Nomad calls.
type Renderer struct {
	Bridge nomadbridge.Client
	// DefaultTemplate is the job (HCL or JSON) used when spec.templateJob is
	// empty; empty means nomadbridge.DefaultTemplate.
	DefaultTemplate string
	// Policies finds the environment policies a job must pass (nil: the
	// built-in default only).
	Policies *Policies

	mu    sync.Mutex
	cache map[types.UID]rendered
}

type rendered struct {
	generation int64
	policies   string // the policies the job was checked against
	job        *nomad.Job
	hash       string
	err        error // only ErrInvalidJob and ErrPolicyViolation are cached: they need a change of spec or policy
}

// Render returns the environment job and its hash, once it passed the
// environment's policies. An error wrapping nomadbridge.ErrInvalidJob means
// the template is wrong (Nomad's message is in it), one wrapping
// nomadbridge.ErrPolicyViolation that the platform's policy refuses what it
// asks for; any other error is Nomad or the API server failing, worth a retry.
func (r *Renderer) Render(ctx context.Context, ee *v1alpha1.ExecutionEnvironment) (*nomad.Job, string, error) {
	namespace, region, err := r.Bridge.Placement(ctx)
	if err != nil {
		return nil, "", err
	}
	policies, err := r.Policies.For(ctx, ee.Namespace, namespace)
	if err != nil {
		return nil, "", err
	}
	key, err := json.Marshal(policies)
	if err != nil {
		return nil, "", fmt.Errorf("key environment policies: %w", err)
	}
	r.mu.Lock()
	c, ok := r.cache[ee.UID]
	r.mu.Unlock()
	if ok && c.generation == ee.Generation && c.policies == string(key) {
		return c.job, c.hash, c.err
	}

	job, hash, err := r.render(ctx, ee, policies, namespace, region)
	if err != nil && !errors.Is(err, nomadbridge.ErrInvalidJob) && !errors.Is(err, nomadbridge.ErrPolicyViolation) {
		return nil, "", err
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[types.UID]rendered{}
	}
	r.cache[ee.UID] = rendered{generation: ee.Generation, policies: string(key), job: job, hash: hash, err: err}
	r.mu.Unlock()
	return job, hash, err
}

// Forget drops an environment from the cache (it was deleted).
func (r *Renderer) Forget(uid types.UID) {
	r.mu.Lock()
	delete(r.cache, uid)
	r.mu.Unlock()
}

func (r *Renderer) render(ctx context.Context, ee *v1alpha1.ExecutionEnvironment, policies []nomadbridge.JobPolicy, namespace, region string) (*nomad.Job, string, error) {
	var template *nomad.Job
	var err error
	src := ee.Spec.TemplateJob
	if src == "" {
		src = r.DefaultTemplate
	}
	switch {
	case src == "":
		template = nomadbridge.DefaultTemplate()
	case nomadbridge.LooksLikeJSON(src):
		template, err = nomadbridge.DecodeJSONTemplate(src)
	default:
		template, err = r.Bridge.ParseHCL(ctx, src)
	}
	if err != nil {
		return nil, "", err
	}
	oversubscription, err := r.Bridge.MemoryOversubscription(ctx)
	if err != nil {
		return nil, "", err
	}
	spec := environmentSpec(ee, oversubscription)
	spec.OperatorNamespace, spec.OperatorRegion = namespace, region
	for _, p := range policies {
		if spec.PidsLimit == 0 || p.MaxPids < spec.PidsLimit {
			spec.PidsLimit = p.MaxPids
		}
	}
	job, err := nomadbridge.RenderEnvironmentJob(template, spec)
	if err != nil {
		return nil, "", err
	}
	// The job a runner would really get, before Nomad sees any of it.
	if err := nomadbridge.CheckJobPolicies(job, spec, policies); err != nil {
		return nil, "", err
	}
	// Validate what a runner will actually be registered as.
	probe := nomadbridge.ForRunner(job, nomadbridge.NewRunnerJobID(ee.Name), nomadbridge.RunnerMeta{
		Instance: r.Bridge.Instance(), Namespace: ee.Namespace, Environment: ee.Name, Runner: ee.Name + "-validate",
	})
	if err := r.Bridge.ValidateJob(ctx, probe); err != nil {
		return nil, "", err
	}
	hash, err := nomadbridge.TemplateHash(job)
	if err != nil {
		return nil, "", err
	}
	return job, hash, nil
}

func environmentSpec(ee *v1alpha1.ExecutionEnvironment, oversubscription bool) nomadbridge.EnvironmentSpec {
	s := nomadbridge.EnvironmentSpec{
		Image:                  ee.Spec.Image,
		CPU:                    int(ee.Spec.CPULimit),
		MemoryMB:               int(ee.Spec.MemoryLimit),
		NetworkAccess:          ee.Spec.NetworkAccess,
		MemoryOversubscription: oversubscription,
	}
	for _, p := range ee.Spec.ExposedPorts {
		s.ExposedPorts = append(s.ExposedPorts, int(p))
	}
	if n := ee.Spec.Nomad; n != nil {
		s.Namespace, s.Region, s.Datacenters, s.NodePool = n.Namespace, n.Region, n.Datacenters, n.NodePool
	}
	return s
}
