package claim

import (
	"slices"
	"testing"
)

func TestOperandIsNeverAnOption(t *testing.T) {
	for in, want := range map[string]string{
		"":             ".",
		"work":         "work",
		"/abs/-x":      "/abs/-x",
		"a/-b":         "a/-b",
		"-rf":          "./-rf",
		"--help":       "./--help",
		"-":            "./-",
		"--to-command": "./--to-command",
	} {
		if got := operand(in); got != want {
			t.Errorf("operand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCopyCommandsQuoteTheirPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  []string
		want []string
	}{
		{"to, plain", copyToCommand("work"), []string{"sh", "-c", `mkdir -p "$1" && tar -xf - -C "$1"`, "sh", "work"}},
		{"to, dash", copyToCommand("--checkpoint-action=exec=id"), []string{"sh", "-c", `mkdir -p "$1" && tar -xf - -C "$1"`, "sh", "./--checkpoint-action=exec=id"}},
		{"to, empty", copyToCommand(""), []string{"sh", "-c", `mkdir -p "$1" && tar -xf - -C "$1"`, "sh", "."}},
		{"from, nested", copyFromCommand("work/project/"), []string{"tar", "-cf", "-", "-C", "work", "project"}},
		{"from, dash base", copyFromCommand("--to-command=sh"), []string{"tar", "-cf", "-", "-C", ".", "./--to-command=sh"}},
		{"from, dash dir", copyFromCommand("-C/x"), []string{"tar", "-cf", "-", "-C", "./-C", "x"}},
		{"from, absolute", copyFromCommand("/srv/out"), []string{"tar", "-cf", "-", "-C", "/srv", "out"}},
	} {
		if !slices.Equal(tc.cmd, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, tc.cmd, tc.want)
		}
	}
}
