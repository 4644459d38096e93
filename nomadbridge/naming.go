package nomadbridge

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Meta keys on every runner job the operator registers. They name the Kubernetes
// object the job mirrors and the operator instance that owns it, so an operator
// only ever lists, adopts or purges its own jobs. Underscores, not dots or
// slashes: Nomad exposes meta to tasks as NOMAD_META_<key> environment variables.
const (
	MetaInstance    = "nomadrunner_instance"
	MetaNamespace   = "nomadrunner_namespace"
	MetaEnvironment = "nomadrunner_environment"
	MetaRunner      = "nomadrunner_runner"
	// MetaImage carries the environment's image on every runner job, also for
	// drivers that have no image (raw_exec, exec): the image is then part of the
	// template hash, so changing it rolls the pool whatever the driver.
	MetaImage = "nomadrunner_image"
)

// RunnerMeta identifies the Runner a Nomad job belongs to and the operator
// instance that made it.
type RunnerMeta struct {
	Instance    string
	Namespace   string
	Environment string
	Runner      string
}

// Map returns the meta entries to merge into a job's meta.
func (m RunnerMeta) Map() map[string]string {
	return map[string]string{
		MetaInstance:    m.Instance,
		MetaNamespace:   m.Namespace,
		MetaEnvironment: m.Environment,
		MetaRunner:      m.Runner,
	}
}

// ParseRunnerMeta reads RunnerMeta from a job's meta. ok is false unless every key
// is present and non-empty: a job that lacks any of them is not one of ours.
func ParseRunnerMeta(meta map[string]string) (m RunnerMeta, ok bool) {
	m = RunnerMeta{
		Instance:    meta[MetaInstance],
		Namespace:   meta[MetaNamespace],
		Environment: meta[MetaEnvironment],
		Runner:      meta[MetaRunner],
	}
	ok = m.Instance != "" && m.Namespace != "" && m.Environment != "" && m.Runner != ""
	return m, ok
}

// NewRunnerJobID returns a fresh job ID `<environment>-<uuid>`. The random UUID
// makes every runner's job distinct even across Kubernetes namespaces and
// operator restarts; a registration with check-index 0 can then never collide
// with another runner's job, only with a retry of its own.
func NewRunnerJobID(environment string) string {
	return fmt.Sprintf("%s-%s", environment, uuid.NewString())
}

// ParseRunnerJobID splits a job ID made by NewRunnerJobID into the environment
// name and the UUID. ok is false for any other ID.
func ParseRunnerJobID(jobID string) (environment string, id uuid.UUID, ok bool) {
	const uuidLen = 36
	if len(jobID) < uuidLen+2 || jobID[len(jobID)-uuidLen-1] != '-' {
		return "", uuid.UUID{}, false
	}
	environment = jobID[:len(jobID)-uuidLen-1]
	id, err := uuid.Parse(jobID[len(jobID)-uuidLen:])
	if err != nil || strings.TrimSpace(environment) != environment {
		return "", uuid.UUID{}, false
	}
	return environment, id, true
}
