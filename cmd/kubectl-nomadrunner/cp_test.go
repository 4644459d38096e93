package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTarRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "proj")
	if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"x.txt": "x", "a/b/y.txt": strings.Repeat("y", 100000)}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := writeTar(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := readTar(&buf, dst); err != nil {
		t.Fatal(err)
	}
	for p, c := range files {
		got, err := os.ReadFile(filepath.Join(dst, "proj", p))
		if err != nil || string(got) != c {
			t.Errorf("%s: %v, %d bytes", p, err, len(got))
		}
	}
}

func TestReadTarRefusesEscapes(t *testing.T) {
	for name, hdr := range map[string]*tar.Header{
		"dot-dot":          {Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644},
		"absolute link":    {Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
		"link leaving dir": {Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../etc"},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			dst := t.TempDir()
			if err := readTar(&buf, dst); err == nil {
				t.Error("accepted an entry outside the folder")
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dst), "evil")); err == nil {
				t.Error("wrote outside the folder")
			}
		})
	}
}

func TestSplitRemote(t *testing.T) {
	for arg, want := range map[string][3]string{
		"python-x7k2p:work/dir": {"python-x7k2p", "work/dir", "remote"},
		"./local:with-colon":    {"", "./local:with-colon", ""},
		"/abs/path":             {"", "/abs/path", ""},
		"plain":                 {"", "plain", ""},
	} {
		r, p, remote := splitRemote(arg)
		if r != want[0] || p != want[1] || remote != (want[2] == "remote") {
			t.Errorf("splitRemote(%q) = %q, %q, %v", arg, r, p, remote)
		}
	}
}
