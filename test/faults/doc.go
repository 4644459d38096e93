// Package faults holds the fault suite: the real operator, run
// in-process in managers that are killed, restarted and replicated, against a
// real kube-apiserver + etcd and a real Nomad dev agent that is restarted, with
// faults injected through a wrapper of nomadbridge.Client. Only tests live here.
package faults
