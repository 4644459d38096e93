// Package nomadbridge is everything the operator says to Nomad: a small Client
// interface over github.com/hashicorp/nomad/api with its real implementation, the
// naming and meta that mark a runner job as ours, and (in later files) job
// rendering and the event stream. Controllers depend on the interface only, so a
// unit test may use a small fake; integration tests use a real Nomad agent.
package nomadbridge
