package controllers

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// The schema's bounds on status fields that carry what Nomad says (its texts,
// its names, its port lists). A status write over any of them is refused with
// 422 and retried forever, so a runner whose allocation failed with a long
// message would stay claimable: everything written is cut to fit first.
// status_bounds_test.go checks these against the generated CRDs.
const (
	maxReasonLen           = 128
	maxMessageLen          = 4096
	maxNomadIDLen          = 128 // nomadJobID, nomadNamespace
	maxAllocationIDLen     = 64
	maxNodeNameLen         = 256
	maxAddressLen          = 256
	maxPorts               = 64
	maxPortLabelLen        = 128
	maxPortHostIPLen       = 64
	maxConditionMessageLen = 32768 // metav1.Condition
	maxConditionReasonLen  = 1024  // metav1.Condition
)

// truncatedMarker ends a text that was cut to fit its field.
const truncatedMarker = "… (truncated)"

// truncate cuts s to at most max characters (the schema counts characters,
// not bytes), ending it with truncatedMarker when it was cut.
func truncate(s string, max int) string {
	r := []rune(s)
	if len(r) <= max {
		return s
	}
	m := []rune(truncatedMarker)
	if max <= len(m) {
		return string(r[:max])
	}
	return string(r[:max-len(m)]) + truncatedMarker
}

// cut cuts an identifier to fit, without a marker (a marker would make it
// look like another valid name).
func cut(s string, max int) string {
	if r := []rune(s); len(r) > max {
		return string(r[:max])
	}
	return s
}

// boundRunnerStatus makes a runner's status fit its schema: texts truncated
// with a marker, identifiers cut, ports deduplicated by label, sorted and at
// most maxPorts (the message says how many were left out).
func boundRunnerStatus(s *v1alpha1.RunnerStatus) {
	s.Reason = cut(s.Reason, maxReasonLen)
	s.NomadJobID = cut(s.NomadJobID, maxNomadIDLen)
	s.NomadNamespace = cut(s.NomadNamespace, maxNomadIDLen)
	s.AllocationID = cut(s.AllocationID, maxAllocationIDLen)
	s.NodeName = cut(s.NodeName, maxNodeNameLen)
	s.Address = cut(s.Address, maxAddressLen)
	s.Ports = boundPorts(s.Ports, &s.Message)
	s.Message = truncate(s.Message, maxMessageLen)
	boundConditions(s.Conditions)
}

// boundPorts keeps one port per label (the list is a map keyed by label), in
// label order, at most maxPorts; a note on what was left out is added to msg.
func boundPorts(ports []v1alpha1.RunnerPort, msg *string) []v1alpha1.RunnerPort {
	if len(ports) == 0 {
		return ports
	}
	seen := map[string]bool{}
	out := make([]v1alpha1.RunnerPort, 0, len(ports))
	for _, p := range ports {
		p.Label = cut(p.Label, maxPortLabelLen)
		p.HostIP = cut(p.HostIP, maxPortHostIPLen)
		if p.Label == "" || seen[p.Label] {
			continue
		}
		seen[p.Label] = true
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Label < out[j].Label })
	if len(out) > maxPorts {
		note := fmt.Sprintf("Only %d of the allocation's %d ports are listed in status.ports.", maxPorts, len(out))
		if *msg == "" {
			*msg = note
		} else {
			*msg += " " + note
		}
		out = out[:maxPorts]
	}
	return out
}

// boundConditions cuts condition reasons and messages to metav1.Condition's bounds.
func boundConditions(conds []metav1.Condition) {
	for i := range conds {
		conds[i].Reason = cut(conds[i].Reason, maxConditionReasonLen)
		conds[i].Message = truncate(conds[i].Message, maxConditionMessageLen)
	}
}
