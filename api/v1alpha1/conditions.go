package v1alpha1

// Condition types of an ExecutionEnvironment.
const (
	// ReadyCondition is True when the template is valid, Nomad is reachable and the
	// pool holds prewarmingPoolSize idle runners. `kubectl wait --for=condition=Ready` reads it.
	ReadyCondition = "Ready"
	// TemplateValidCondition is False when Nomad rejects the rendered runner job;
	// the message is Nomad's own. Nothing is created while it is False.
	TemplateValidCondition = "TemplateValid"
	// PoolFilledCondition is True when idle runners equal prewarmingPoolSize.
	PoolFilledCondition = "PoolFilled"
	// NomadReachableCondition is False while the Nomad API cannot be reached.
	NomadReachableCondition = "NomadReachable"
)

// Condition types of a Runner (besides Ready).
const (
	// NomadJobPurgedCondition is False while a deleting Runner waits for its Nomad
	// job to be purged (Nomad unreachable or failing); the message says why and
	// names SkipNomadCleanupAnnotation, the administrator's escape.
	NomadJobPurgedCondition = "NomadJobPurged"
)

// Condition reasons, CamelCase, shared by both kinds where they mean the same.
const (
	ReasonAsExpected        = "AsExpected"
	ReasonTemplateInvalid   = "TemplateInvalid"
	ReasonScalingUp         = "ScalingUp"
	ReasonScalingDown       = "ScalingDown"
	ReasonWaitingForNomad   = "WaitingForNomadCapacity"
	ReasonNomadUnreachable  = "NomadUnreachable"
	ReasonInternalError     = "InternalError"
	ReasonOOMKilled         = "OOMKilled"
	ReasonAllocationFailed  = "AllocationFailed"
	ReasonAllocationRestart = "AllocationRestarted"
	ReasonNomadJobLost      = "NomadJobLost"
	ReasonInactivityTimeout = "InactivityTimeout"
	// ReasonRunnersCrashLooping: unclaimed runners keep failing (e.g. a template
	// whose task exits at once); replacements are created with exponential
	// backoff and PoolFilled (hence Ready) is False with this reason.
	ReasonRunnersCrashLooping = "RunnersCrashLooping"
	// ReasonPurgeFailed: a deleting Runner's Nomad job could not be purged yet.
	ReasonPurgeFailed = "PurgeFailed"
	// ReasonRunnerLimitReached: the environment has spec.maxRunners runners
	// (most of them claimed); the pool refills once claims are released.
	ReasonRunnerLimitReached = "RunnerLimitReached"
	// ReasonWaitingForClaims: the environment is being deleted and waits for
	// its claimed runners to be released (EndClaimsAnnotation ends them).
	ReasonWaitingForClaims = "WaitingForClaims"
	// ReasonNotManaged: a Runner the operator did not make (no controlling
	// ExecutionEnvironment, or a job ID not of its form); it is left alone.
	ReasonNotManaged = "NotManaged"
	// ReasonPolicyViolation: the rendered runner job asks Nomad for more than
	// the EnvironmentPolicies of the environment's namespace allow; nothing is
	// registered, and the environment's unclaimed runners are removed.
	ReasonPolicyViolation = "PolicyViolation"
)

// EndClaimsAnnotation, set to "true" on an ExecutionEnvironment being deleted,
// deletes its claimed runners at once instead of waiting for their holders to
// release them. Setting it needs the RBAC verb force-release on runners
// (an admission policy checks it), like releasing another user's claim.
const EndClaimsAnnotation = "execution.nomadrunner.io/end-claims"

// SkipNomadCleanupAnnotation, set to "true" on a Runner or an ExecutionEnvironment
// being deleted, lets its finalizer finish without deregistering Nomad jobs. It is
// the administrator's escape when the Nomad cluster is gone for good; jobs left
// behind in a Nomad that comes back are purged as orphans.
const SkipNomadCleanupAnnotation = "execution.nomadrunner.io/skip-nomad-cleanup"
