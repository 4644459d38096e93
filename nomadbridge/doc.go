// Package nomadbridge is everything the operator says to Nomad and knows of it,
// with no Kubernetes in it:
//
//   - client.go, nomad.go, placement.go: the Client interface over
//     github.com/hashicorp/nomad/api and its real implementation (config.go
//     builds it from flags);
//   - naming.go, instance.go: the job IDs and meta that mark a runner job as
//     this operator instance's;
//   - render.go, policy.go: rendering a runner job from an environment's
//     template, and checking it against the environment policy;
//   - jobstore.go: the JobStore, what Nomad last said about every runner job;
//   - watcher.go: the Watcher, which reads the event stream into the JobStore
//     and a Handler, with its resume rule (nextStreamStart);
//   - health.go: Health, whose probe is Client.Ping, the one reachability check.
//
// Controllers depend on the Client interface only, so a unit test may use a
// small fake; integration tests use a real Nomad agent.
package nomadbridge
