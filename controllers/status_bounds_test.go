package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

func TestTruncate(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short text stays", "Task t is dead.", 4096, "Task t is dead."},
		{"exactly the bound stays", strings.Repeat("a", 20), 20, strings.Repeat("a", 20)},
		{"one over is cut with the marker", strings.Repeat("a", 21), 20, strings.Repeat("a", 20-utf8.RuneCountInString(truncatedMarker)) + truncatedMarker},
		{"characters, not bytes, are counted", strings.Repeat("é", 20), 20, strings.Repeat("é", 20)},
		{"a bound below the marker cuts bare", "abcdef", 3, "abc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := truncate(c.in, c.max)
			if got != c.want {
				t.Fatalf("truncate(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
			}
			if n := utf8.RuneCountInString(got); n > c.max {
				t.Fatalf("result has %d characters, bound %d", n, c.max)
			}
		})
	}
}

// A status made of oversized Nomad texts, names and ports, as a hostile
// template or a misbehaving Nomad could produce them.
func oversizedStatus() v1alpha1.RunnerStatus {
	long := strings.Repeat("Nomad says something very long. ", 10000) // ~320k characters
	s := v1alpha1.RunnerStatus{
		Phase:          v1alpha1.RunnerFailed,
		Reason:         strings.Repeat("Reason", 100),
		Message:        long,
		NomadJobID:     strings.Repeat("j", 500),
		NomadNamespace: strings.Repeat("n", 500),
		AllocationID:   strings.Repeat("a", 500),
		NodeName:       strings.Repeat("node", 500),
		Address:        strings.Repeat("1", 500),
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ReadyCondition, Status: metav1.ConditionFalse,
			Reason: strings.Repeat("R", 2000), Message: long,
		}},
	}
	for i := range 200 {
		s.Ports = append(s.Ports, v1alpha1.RunnerPort{Label: fmt.Sprintf("p%03d", 199-i), HostIP: strings.Repeat("h", 100), Port: int32(20000 + i)})
	}
	s.Ports = append(s.Ports, v1alpha1.RunnerPort{Label: "p000", Port: 1}, v1alpha1.RunnerPort{Label: "", Port: 2})
	return s
}

func TestBoundRunnerStatusFitsTheSchema(t *testing.T) {
	limits := runnerStatusLimits(t)
	s := oversizedStatus()
	boundRunnerStatus(&s)

	texts := map[string]string{
		"reason": s.Reason, "message": s.Message, "nomadJobID": s.NomadJobID, "nomadNamespace": s.NomadNamespace,
		"allocationID": s.AllocationID, "nodeName": s.NodeName, "address": s.Address,
	}
	for field, v := range texts {
		if n := utf8.RuneCountInString(v); n > limits[field] {
			t.Errorf("status.%s has %d characters, schema maximum %d", field, n, limits[field])
		}
	}
	if !strings.HasSuffix(s.Message, truncatedMarker) {
		t.Errorf("a cut message must end with %q, got ...%q", truncatedMarker, s.Message[len(s.Message)-40:])
	}
	if len(s.Ports) != limits["ports"] {
		t.Errorf("status.ports has %d items, want the schema maximum %d", len(s.Ports), limits["ports"])
	}
	seen := map[string]bool{}
	for i, p := range s.Ports {
		if p.Label == "" || seen[p.Label] {
			t.Errorf("port %d: empty or duplicate label %q (ports are a map keyed by label)", i, p.Label)
		}
		seen[p.Label] = true
		if n := len(p.HostIP); n > limits["ports.hostIP"] {
			t.Errorf("port %s: hostIP has %d characters, maximum %d", p.Label, n, limits["ports.hostIP"])
		}
		if i > 0 && s.Ports[i-1].Label > p.Label {
			t.Errorf("ports not sorted by label at %d", i)
		}
	}
	if s.Ports[0].Label != "p000" || s.Ports[0].Port != 20199 {
		t.Errorf("the first port of a label wins: got %+v", s.Ports[0])
	}
	c := s.Conditions[0]
	if utf8.RuneCountInString(c.Message) > maxConditionMessageLen || len(c.Reason) > maxConditionReasonLen {
		t.Errorf("condition not bounded: reason %d, message %d characters", len(c.Reason), utf8.RuneCountInString(c.Message))
	}
}

func TestBoundPortsSaysWhatWasLeftOut(t *testing.T) {
	s := oversizedStatus()
	s.Message = ""
	boundRunnerStatus(&s)
	if want := "Only 64 of the allocation's 200 ports are listed in status.ports."; s.Message != want {
		t.Fatalf("message = %q, want %q", s.Message, want)
	}
	small := v1alpha1.RunnerStatus{Ports: []v1alpha1.RunnerPort{{Label: "http", Port: 8080}}}
	boundRunnerStatus(&small)
	if small.Message != "" || len(small.Ports) != 1 {
		t.Fatalf("a status within bounds must not change: %+v", small)
	}
}

// runnerStatusLimits reads the bounds of the Runner's status fields from the
// generated CRD, so the constants above cannot drift from the schema.
func runnerStatusLimits(t *testing.T) map[string]int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "execution.nomadrunner.io_runners.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]struct {
								MaxLength *int `json:"maxLength"`
								MaxItems  *int `json:"maxItems"`
								Items     *struct {
									Properties map[string]struct {
										MaxLength *int `json:"maxLength"`
									} `json:"properties"`
								} `json:"items"`
							} `json:"properties"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	status := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"].Properties
	limits := map[string]int{}
	for field, want := range map[string]int{
		"reason": maxReasonLen, "message": maxMessageLen, "nomadJobID": maxNomadIDLen, "nomadNamespace": maxNomadIDLen,
		"allocationID": maxAllocationIDLen, "nodeName": maxNodeNameLen, "address": maxAddressLen,
	} {
		p, ok := status[field]
		if !ok || p.MaxLength == nil {
			t.Fatalf("status.%s has no maxLength in the CRD", field)
		}
		if *p.MaxLength != want {
			t.Errorf("status.%s: CRD maxLength %d, constant %d", field, *p.MaxLength, want)
		}
		limits[field] = *p.MaxLength
	}
	ports := status["ports"]
	if ports.MaxItems == nil || *ports.MaxItems != maxPorts || ports.Items == nil {
		t.Fatalf("status.ports: CRD maxItems %v, constant %d", ports.MaxItems, maxPorts)
	}
	limits["ports"] = *ports.MaxItems
	for field, want := range map[string]int{"label": maxPortLabelLen, "hostIP": maxPortHostIPLen} {
		p := ports.Items.Properties[field]
		if p.MaxLength == nil || *p.MaxLength != want {
			t.Errorf("status.ports[].%s: CRD maxLength %v, constant %d", field, p.MaxLength, want)
		}
		limits["ports."+field] = want
	}
	return limits
}
