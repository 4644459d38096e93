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
	// MetaRunnerUID is the Runner object's UID. A name can be reused (a
	// Runner deleted and another created under its name, or one forged with
	// it); a UID cannot, so only the Runner that registered a job may adopt or
	// release it.
	MetaRunnerUID = "nomadrunner_runner_uid"
	// MetaImage carries the environment's image on every runner job, also for
	// drivers that have no image (raw_exec, exec): the image is then part of the
	// template hash, so changing it rolls the pool whatever the driver.
	MetaImage = "nomadrunner_image"
)

// runnerMetaKeys are the meta keys RunnerMeta owns on a job.
var runnerMetaKeys = []string{MetaInstance, MetaNamespace, MetaEnvironment, MetaRunner, MetaRunnerUID}

// RunnerMeta identifies the Runner a Nomad job belongs to and the operator
// instance that made it.
type RunnerMeta struct {
	Instance    string
	Namespace   string
	Environment string
	Runner      string
	// UID is the Runner's UID; empty on jobs registered before it was
	// recorded (and on the validation probe, which is never registered).
	UID string
}

// Map returns the meta entries to merge into a job's meta. An empty UID is
// left out rather than stored empty.
func (m RunnerMeta) Map() map[string]string {
	out := map[string]string{
		MetaInstance:    m.Instance,
		MetaNamespace:   m.Namespace,
		MetaEnvironment: m.Environment,
		MetaRunner:      m.Runner,
	}
	if m.UID != "" {
		out[MetaRunnerUID] = m.UID
	}
	return out
}

// String names the runner in messages: instance/namespace/runner (uid).
func (m RunnerMeta) String() string {
	s := fmt.Sprintf("instance %q, runner %s/%s", m.Instance, m.Namespace, m.Runner)
	if m.UID != "" {
		s += fmt.Sprintf(" (uid %s)", m.UID)
	}
	return s
}

// ParseRunnerMeta reads RunnerMeta from a job's meta. ok is false unless the
// instance, namespace, environment and runner keys are present and non-empty:
// a job that lacks any of them is not one of ours.
//
// The UID is read but not required. Jobs registered by an older version of the
// operator lack it, and they must stay listed so the orphan collector can purge
// them once their Runner is gone. Requiring the UID where it matters (a Runner
// releasing or adopting a job) is MatchOwner's part, not this parser's.
func ParseRunnerMeta(meta map[string]string) (m RunnerMeta, ok bool) {
	m = RunnerMeta{
		Instance:    meta[MetaInstance],
		Namespace:   meta[MetaNamespace],
		Environment: meta[MetaEnvironment],
		Runner:      meta[MetaRunner],
		UID:         meta[MetaRunnerUID],
	}
	ok = m.Instance != "" && m.Namespace != "" && m.Environment != "" && m.Runner != ""
	return m, ok
}

// MatchOwner tells whether a job whose meta is jobMeta belongs to owner, and if
// not, whose it is. The job must name owner's instance, namespace, environment
// and runner exactly. The UID is compared when the owner has one: a Runner
// (which always has a UID) then never matches a job of another Runner that had
// the same name, nor a job registered before UIDs were recorded; an owner
// without a UID is the orphan collector passing back the meta it listed, which
// matches that job whether it has a UID or not.
func MatchOwner(owner RunnerMeta, jobMeta map[string]string) (ok bool, whose string) {
	got, parsed := ParseRunnerMeta(jobMeta)
	if !parsed {
		return false, "no runner meta"
	}
	same := got.Instance == owner.Instance && got.Namespace == owner.Namespace &&
		got.Environment == owner.Environment && got.Runner == owner.Runner &&
		(owner.UID == "" || got.UID == owner.UID)
	if !same {
		return false, got.String()
	}
	return true, ""
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
