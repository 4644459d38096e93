package v1alpha1

// Finalizers the operator puts on the objects it manages.
const (
	// EnvironmentFinalizer holds an ExecutionEnvironment's deletion until its
	// runners are gone (claimed ones after their release: the drain).
	EnvironmentFinalizer = "execution.nomadrunner.io/runners"
	// RunnerFinalizer holds a Runner's deletion until its Nomad job is stopped,
	// so that the code in it ends before the object goes.
	RunnerFinalizer = "execution.nomadrunner.io/nomad-job"
)

// Annotations that tie a Runner to its Nomad job. The operator sets them when
// it creates the Runner, before the job is registered, so that a registration
// retried after a crash uses the same ID (and check-index 0 turns it into a
// no-op instead of a second job). Only the operator may change them (an
// admission policy refuses everyone without the verb operate).
const (
	JobIDAnnotation          = "execution.nomadrunner.io/nomad-job-id"
	NomadNamespaceAnnotation = "execution.nomadrunner.io/nomad-namespace"
)

// Reasons of the Events the operator records, past tense for what it did,
// Failed… for what it could not do. Conditions' reasons (conditions.go) are
// recorded as Event reasons too where an Event says the same.
const (
	// EventReasonSuccessfulCreate: runners were created (on the environment).
	EventReasonSuccessfulCreate = "SuccessfulCreate"
	// EventReasonFailedCreate: creating a runner failed (on the environment).
	EventReasonFailedCreate = "FailedCreate"
	// EventReasonSuccessfulDelete: an unclaimed runner was deleted (scale-down,
	// rollout, failure, policy) (on the environment).
	EventReasonSuccessfulDelete = "SuccessfulDelete"
	// EventReasonClaimEnded: a claimed runner was deleted because its
	// environment was deleted with EndClaimsAnnotation (on the environment).
	EventReasonClaimEnded = "ClaimEnded"
	// EventReasonFailedRegister: registering a runner's Nomad job failed (on the runner).
	EventReasonFailedRegister = "FailedRegister"
	// EventReasonFailedPurge: releasing a deleted runner's Nomad job failed (on the runner).
	EventReasonFailedPurge = "FailedPurge"
	// EventReasonForeignNomadJob: a Runner's job ID names a job whose meta is
	// not that Runner's; the operator neither adopts nor releases it (on the runner).
	EventReasonForeignNomadJob = "ForeignNomadJob"
)
