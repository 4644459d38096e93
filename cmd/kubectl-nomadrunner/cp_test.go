package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// entry is one member of a tar stream built in memory.
type entry struct {
	name string
	typ  byte
	link string // target of a symlink or hard link
	body string
	mode int64
}

func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func symlink(name, target string) entry { return entry{name: name, typ: tar.TypeSymlink, link: target} }

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body))}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chainEscape is a stream whose symlinks each look inside the destination
// when read lexically, but chain so that its last file lands levels folders
// above it: project/l -> ., project/l/m -> .., project/l/m/n -> .., ...,
// project/l/m/n/.../pwned.
func chainEscape(levels int) []entry {
	names := []string{"m", "n", "o", "p", "q", "r", "s"}[:levels+1]
	entries := []entry{dir("project/"), symlink("project/l", ".")}
	for i := range names {
		entries = append(entries, symlink("project/l/"+strings.Join(names[:i+1], "/"), ".."))
	}
	return append(entries, file("project/l/"+strings.Join(names, "/")+"/pwned", "pwned"))
}

// destIn makes a destination five folders below a fresh temporary folder, so
// an escape of up to five levels still lands where the test can see it.
func destIn(t *testing.T) (base, dest string) {
	base = t.TempDir()
	dest = filepath.Join(base, "a", "b", "c", "d", "dest")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	return base, dest
}

// assertContained fails if base holds anything but dest and its ancestors,
// or if a symlink in dest resolves outside it.
func assertContained(t *testing.T, base, dest string) {
	t.Helper()
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inside := p == dest || strings.HasPrefix(p, dest+string(filepath.Separator))
		if !inside && !strings.HasPrefix(dest, p+string(filepath.Separator)) && p != base {
			t.Errorf("%s exists outside the destination", p)
		}
		if inside && d.Type()&fs.ModeSymlink != 0 {
			real, err := filepath.EvalSymlinks(p)
			if err == nil && real != realDest && !strings.HasPrefix(real, realDest+string(filepath.Separator)) {
				t.Errorf("symlink %s resolves outside the destination, to %s", p, real)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var testLimits = extractLimits{MaxBytes: 1 << 20, MaxEntries: 1000}

func TestExtractTarRefusesHostileStreams(t *testing.T) {
	for _, tc := range []struct {
		name      string
		entries   []entry
		lim       extractLimits
		badEntry  string // the entry the error must name
		reason    string
		wantFiles []string // what was unpacked before the bad entry, relative to dest
	}{
		{
			name:     "link chain escaping one level",
			entries:  chainEscape(1),
			badEntry: "project/l/m", reason: `below "project/l", a symlink`,
			wantFiles: []string{"project", "project/l"},
		},
		{
			name:     "link chain escaping five levels",
			entries:  chainEscape(5),
			badEntry: "project/l/m", reason: `below "project/l", a symlink`,
			wantFiles: []string{"project", "project/l"},
		},
		{
			name:     "absolute symlink",
			entries:  []entry{dir("project/"), symlink("project/etc", "/etc")},
			badEntry: "project/etc", reason: "absolute path",
			wantFiles: []string{"project"},
		},
		{
			name:     "absolute symlink then a file through it",
			entries:  []entry{symlink("out", "/tmp"), file("out/pwned", "x")},
			badEntry: "out", reason: "absolute path",
		},
		{
			name:     "symlink leaving the folder",
			entries:  []entry{dir("project/"), symlink("project/up", "../../x")},
			badEntry: "project/up", reason: "leaves the folder",
			wantFiles: []string{"project"},
		},
		{
			name: "symlink climbing out through another symlink",
			// Lexically s/../.. is "..", one level up from project: inside.
			// Really s is project, so it is two levels up: outside.
			entries:  []entry{dir("project/"), symlink("project/s", "."), symlink("project/t", "s/../.."), file("project/t/pwned", "x")},
			badEntry: "project/t", reason: `".." after a name`,
			wantFiles: []string{"project", "project/s"},
		},
		{
			name:     "symlink then a file written through it",
			entries:  []entry{dir("project/"), symlink("project/out", ".."), file("project/out/pwned", "x")},
			badEntry: "project/out/pwned", reason: `below "project/out", a symlink`,
			wantFiles: []string{"project", "project/out"},
		},
		{
			name:     "symlink then a folder made through it",
			entries:  []entry{symlink("in", "."), dir("in/in/in/")},
			badEntry: "in/in/in/", reason: `below "in", a symlink`,
			wantFiles: []string{"in"},
		},
		{
			name:     "dot-dot name",
			entries:  []entry{file("../pwned", "x")},
			badEntry: "../pwned", reason: `".." component`,
		},
		{
			name:     "dot-dot deep in a name",
			entries:  []entry{dir("project/"), file("project/../../../../../../pwned", "x")},
			badEntry: "project/../../../../../../pwned", reason: `".." component`,
			wantFiles: []string{"project"},
		},
		{
			name:     "dot-dot that cleaning would hide",
			entries:  []entry{file("project/../x", "x")},
			badEntry: "project/../x", reason: `".." component`,
		},
		{
			name:     "absolute name",
			entries:  []entry{file("/tmp/pwned-by-nomadrunner-cp-test", "x")},
			badEntry: "/tmp/pwned-by-nomadrunner-cp-test", reason: "absolute name",
		},
		{
			name:     "hard link out",
			entries:  []entry{dir("project/"), {name: "project/passwd", typ: tar.TypeLink, link: "/etc/passwd"}},
			badEntry: "project/passwd", reason: "hard link",
			wantFiles: []string{"project"},
		},
		{
			name:     "hard link in the tree",
			entries:  []entry{file("a", "x"), {name: "b", typ: tar.TypeLink, link: "a"}},
			badEntry: "b", reason: "hard link",
			wantFiles: []string{"a"},
		},
		{
			name:     "character device",
			entries:  []entry{{name: "null", typ: tar.TypeChar, mode: 0o666}},
			badEntry: "null", reason: "device",
		},
		{
			name:     "block device",
			entries:  []entry{{name: "sda", typ: tar.TypeBlock, mode: 0o660}},
			badEntry: "sda", reason: "device",
		},
		{
			name:     "fifo",
			entries:  []entry{{name: "pipe", typ: tar.TypeFifo, mode: 0o644}},
			badEntry: "pipe", reason: "fifo",
		},
		{
			name:     "oversized stream",
			entries:  []entry{dir("project/"), file("project/a", strings.Repeat("a", 600)), file("project/b", strings.Repeat("b", 600))},
			lim:      extractLimits{MaxBytes: 1000, MaxEntries: 1000},
			badEntry: "project/b", reason: "more than 1000 bytes of files in all (raise --max-bytes)",
			wantFiles: []string{"project", "project/a"},
		},
		{
			name:     "too many entries",
			entries:  []entry{dir("project/"), file("project/a", ""), file("project/b", ""), file("project/c", "")},
			lim:      extractLimits{MaxBytes: 1000, MaxEntries: 3},
			badEntry: "project/c", reason: "more than 3 entries (raise --max-entries)",
			wantFiles: []string{"project", "project/a", "project/b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.lim
			if lim == (extractLimits{}) {
				lim = testLimits
			}
			base, dest := destIn(t)
			err := extractTar(bytes.NewReader(tarOf(t, tc.entries...)), dest, lim)
			// Checked even when the stream was accepted, to show where it wrote.
			defer assertContained(t, base, dest)
			if err == nil {
				t.Fatal("the stream was accepted")
			}
			if want := fmt.Sprintf("entry %q", tc.badEntry); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			if got := tree(t, dest); !slices.Equal(got, tc.wantFiles) {
				t.Errorf("destination holds %q, want %q", got, tc.wantFiles)
			}
		})
	}
}

// tree lists what is below dir, sorted, without following symlinks.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// describe reads back what extraction made: "dir", "file MODE CONTENT" or
// "link TARGET".
func describe(t *testing.T, dest string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, name := range tree(t, dest) {
		p := filepath.Join(dest, name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			got[name] = "link " + target
		case fi.IsDir():
			got[name] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got[name] = fmt.Sprintf("file %v %s", fi.Mode(), b)
		}
	}
	return got
}

// fixedUmask makes created modes predictable.
func fixedUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
}

func TestExtractTarUnpacksLegitimateStreams(t *testing.T) {
	fixedUmask(t)
	for _, tc := range []struct {
		name    string
		entries []entry
		want    map[string]string
		// once: copying the stream again over its result fails, as a
		// symlink entry does not replace a folder.
		once bool
	}{
		{
			name: "nested folders and files",
			entries: []entry{
				dir("project/"), dir("project/a/"), dir("project/a/b/"),
				file("project/x.txt", "x"), file("project/a/b/y.txt", strings.Repeat("y", 100_000)),
				{name: "project/run.sh", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o7755}, // setuid, setgid, sticky dropped
			},
			want: map[string]string{
				"project": "dir", "project/a": "dir", "project/a/b": "dir",
				"project/x.txt": "file -rw-r--r-- x", "project/a/b/y.txt": "file -rw-r--r-- " + strings.Repeat("y", 100_000),
				"project/run.sh": "file -rwxr-xr-x #!/bin/sh\n",
			},
		},
		{
			name: "relative symlinks that stay inside",
			entries: []entry{
				dir("project/"), dir("project/lib/"), file("project/lib/f", "f"),
				symlink("project/to-file", "lib/f"), symlink("project/to-dir", "lib"),
				symlink("project/lib/up", "../to-file"), symlink("project/parent", ".."),
				symlink("project/dangling", "not/yet"),
			},
			want: map[string]string{
				"project": "dir", "project/lib": "dir", "project/lib/f": "file -rw-r--r-- f",
				"project/to-file": "link lib/f", "project/to-dir": "link lib",
				"project/lib/up": "link ../to-file", "project/parent": "link ..",
				"project/dangling": "link not/yet",
			},
		},
		{
			name:    "files without folder entries",
			entries: []entry{file("p/q/r.txt", "r")},
			want:    map[string]string{"p": "dir", "p/q": "dir", "p/q/r.txt": "file -rw-r--r-- r"},
		},
		{
			name:    "names starting with ./",
			entries: []entry{dir("./"), dir("./-x/"), file("./-x/y", "y")},
			want:    map[string]string{"-x": "dir", "-x/y": "file -rw-r--r-- y"},
		},
		{
			name:    "a later entry replaces a symlink instead of writing through it",
			entries: []entry{dir("p/"), file("p/f", "f"), symlink("p/x", "f"), file("p/x", "x"), symlink("p/y", "f"), dir("p/y/")},
			want:    map[string]string{"p": "dir", "p/f": "file -rw-r--r-- f", "p/x": "file -rw-r--r-- x", "p/y": "dir"},
			once:    true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, dest := destIn(t)
			stream := tarOf(t, tc.entries...)
			if err := extractTar(bytes.NewReader(stream), dest, testLimits); err != nil {
				t.Fatal(err)
			}
			assertContained(t, base, dest)
			got := describe(t, dest)
			for name, want := range tc.want {
				if got[name] != want {
					t.Errorf("%s: %q, want %q", name, got[name], want)
				}
				delete(got, name)
			}
			for name, what := range got {
				t.Errorf("unexpected %s: %s", name, what)
			}
			// Copying the same thing again over it works too.
			if tc.once {
				return
			}
			if err := extractTar(bytes.NewReader(stream), dest, testLimits); err != nil {
				t.Errorf("second copy: %v", err)
			}
		})
	}
}

func TestExtractTarLinkFollowsToItsTarget(t *testing.T) {
	_, dest := destIn(t)
	stream := tarOf(t, dir("p/"), dir("p/lib/"), file("p/lib/f", "content"), symlink("p/l", "lib/f"))
	if err := extractTar(bytes.NewReader(stream), dest, testLimits); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dest, "p", "l"))
	if err != nil || string(b) != "content" {
		t.Fatalf("reading through the link: %q, %v", b, err)
	}
}

func TestCheckLinkTarget(t *testing.T) {
	for _, tc := range []struct {
		dir, target string
		ok          bool
	}{
		{".", "x", true},
		{".", ".", true},
		{".", "..", false},
		{"a", "..", true},
		{"a", "../..", false},
		{"a/b/c", "../../../x/y", true},
		{"a/b/c", "../../../../x", false},
		{"a", "./../x", true},
		{"a", "x/../y", false}, // x may be a link: cannot be checked lexically
		{"a", "x/..", false},
		{"a/b", "../x/../..", false},
		{".", "/etc", false},
		{".", "", false},
		{"a", "x//y/./z", true},
	} {
		err := checkLinkTarget(tc.dir, tc.target)
		if (err == nil) != tc.ok {
			t.Errorf("checkLinkTarget(%q, %q) = %v, want ok=%v", tc.dir, tc.target, err, tc.ok)
		}
	}
}

func TestLocalName(t *testing.T) {
	for name, want := range map[string]string{
		"a":        "a",
		"a/b/":     "a/b",
		"./a//b":   "a/b",
		"./":       ".",
		".":        ".",
		"a/./b":    "a/b",
		"..":       "",
		"a/..":     "",
		"../a":     "",
		"a/../b":   "",
		"/a":       "",
		"":         "",
		"a\\..\\b": "a\\..\\b", // a plain name on the unpacking side
	} {
		got, err := localName(name)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("localName(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestReceiveTar(t *testing.T) {
	valid := tarOf(t, dir("p/"), file("p/f", "f"))
	hostile := tarOf(t, chainEscape(1)...)
	boom := errors.New("tar in the runner exited with 2")
	// endless writes until the context ends or a write fails, as the exec
	// session does with what the runner sends.
	endless := func(ctx context.Context, w io.Writer, cancelled *bool) error {
		junk := make([]byte, 32<<10)
		for {
			if ctx.Err() != nil {
				*cancelled = true
				return ctx.Err()
			}
			if _, err := w.Write(junk); err != nil {
				// The pipe closes after the context is cancelled.
				*cancelled = ctx.Err() != nil
				return err
			}
		}
	}
	for _, tc := range []struct {
		name    string
		produce func(ctx context.Context, w io.Writer, cancelled *bool) error
		wantErr string // "" = success
		cancel  bool   // the producer must see its context cancelled
	}{
		{
			name: "valid stream with padding",
			produce: func(_ context.Context, w io.Writer, _ *bool) error {
				_, err := w.Write(append(valid, make([]byte, 10240)...))
				return err
			},
		},
		{
			name: "runner fails",
			produce: func(_ context.Context, w io.Writer, _ *bool) error {
				return boom
			},
			wantErr: boom.Error(),
		},
		{
			name: "hostile stream that keeps sending",
			produce: func(ctx context.Context, w io.Writer, c *bool) error {
				if _, err := w.Write(hostile); err != nil {
					*c = ctx.Err() != nil
					return err
				}
				return endless(ctx, w, c)
			},
			wantErr: `entry "project/l/m"`,
			cancel:  true,
		},
		{
			name: "valid stream then endless junk",
			produce: func(ctx context.Context, w io.Writer, c *bool) error {
				if _, err := w.Write(valid); err != nil {
					return err
				}
				return endless(ctx, w, c)
			},
			wantErr: "after the end of the tar stream",
			cancel:  true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, dest := destIn(t)
			cancelled := false
			err := receiveTar(context.Background(), dest, testLimits, func(ctx context.Context, w io.Writer) error {
				return tc.produce(ctx, w, &cancelled)
			})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
			if cancelled != tc.cancel {
				t.Errorf("producer cancelled: %v, want %v", cancelled, tc.cancel)
			}
			assertContained(t, base, dest)
		})
	}
}

func TestTarRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "proj")
	for _, d := range []string{"a/b", "lib"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"x.txt": "x", "a/b/y.txt": strings.Repeat("y", 100000), "lib/f": "f"}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"l": "lib/f", "a/b/up": "../../lib"}
	for p, target := range links {
		if err := os.Symlink(target, filepath.Join(src, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf, notes bytes.Buffer
	if err := writeTar(&buf, src, &notes); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notes.String(), "skipping fifo") {
		t.Errorf("no note about the skipped fifo: %q", notes.String())
	}
	base, dest := destIn(t)
	if err := extractTar(&buf, dest, testLimits); err != nil {
		t.Fatal(err)
	}
	assertContained(t, base, dest)
	for p, c := range files {
		got, err := os.ReadFile(filepath.Join(dest, "proj", p))
		if err != nil || string(got) != c {
			t.Errorf("%s: %v, %d bytes", p, err, len(got))
		}
	}
	for p, target := range links {
		if got, err := os.Readlink(filepath.Join(dest, "proj", p)); err != nil || got != target {
			t.Errorf("%s: %q, %v; want a link to %q", p, got, err, target)
		}
	}
	if _, err := os.Lstat(filepath.Join(dest, "proj", "fifo")); err == nil {
		t.Error("the fifo was copied")
	}
}

// namesIn lists the entry names of a tar stream.
func namesIn(t *testing.T, stream []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(stream))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

func TestWriteTarStaysInTheSource(t *testing.T) {
	work := t.TempDir()
	outside := filepath.Join(work, "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := func(t *testing.T, links map[string]string) string {
		src := filepath.Join(t.TempDir(), "proj")
		if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "sub", "f"), []byte("f"), 0o644); err != nil {
			t.Fatal(err)
		}
		for p, target := range links {
			if err := os.Symlink(target, filepath.Join(src, p)); err != nil {
				t.Fatal(err)
			}
		}
		return src
	}
	for _, tc := range []struct {
		name, link, target, wantErr string
	}{
		{"absolute link", "sub/abs", outside, `sub/abs: symlink to the absolute path`},
		{"link leaving the source", "sub/up", "../../secret", `sub/up: symlink to "../../secret" leaves the folder`},
		{"link to the source's parent", "parent", "..", `parent: symlink to ".." leaves the folder`},
		{"link with .. after a name", "sub/x", "f/../../..", `sub/x: symlink to "f/../../.." has ".." after a name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := mk(t, map[string]string{tc.link: tc.target})
			var buf bytes.Buffer
			err := writeTar(&buf, src, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
			if bytes.Contains(buf.Bytes(), []byte("secret")) {
				t.Error("the stream holds the outside file")
			}
		})
	}

	t.Run("names are relative, under the source's own name", func(t *testing.T) {
		src := mk(t, map[string]string{"in": "sub/f"})
		for _, arg := range []string{src, src + "/", filepath.Join(src, "sub", "..")} {
			var buf bytes.Buffer
			if err := writeTar(&buf, arg, io.Discard); err != nil {
				t.Fatal(err)
			}
			want := []string{"proj", "proj/in", "proj/sub", "proj/sub/f"}
			if got := namesIn(t, buf.Bytes()); !slices.Equal(got, want) {
				t.Errorf("writeTar(%q): names %q, want %q", arg, got, want)
			}
		}
	})

	t.Run(". and .. are stored under their real names", func(t *testing.T) {
		src := mk(t, nil)
		t.Chdir(filepath.Join(src, "sub"))
		for arg, want := range map[string][]string{
			".":  {"sub", "sub/f"},
			"..": {"proj", "proj/sub", "proj/sub/f"},
			"f":  {"f"},
		} {
			var buf bytes.Buffer
			if err := writeTar(&buf, arg, io.Discard); err != nil {
				t.Fatal(err)
			}
			if got := namesIn(t, buf.Bytes()); !slices.Equal(got, want) {
				t.Errorf("writeTar(%q): names %q, want %q", arg, got, want)
			}
		}
	})

	t.Run("a source that is a symlink is followed, a link inside it is not", func(t *testing.T) {
		src := mk(t, map[string]string{"out": "sub"})
		named := filepath.Join(t.TempDir(), "named")
		if err := os.Symlink(src, named); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := writeTar(&buf, named, io.Discard); err != nil {
			t.Fatal(err)
		}
		want := []string{"named", "named/out", "named/sub", "named/sub/f"}
		if got := namesIn(t, buf.Bytes()); !slices.Equal(got, want) {
			t.Errorf("names %q, want %q", got, want)
		}
	})

	t.Run("setuid bits are not sent", func(t *testing.T) {
		src := mk(t, nil)
		p := filepath.Join(src, "sub", "f")
		if err := os.Chmod(p, 0o4755); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := writeTar(&buf, p, io.Discard); err != nil {
			t.Fatal(err)
		}
		hdr, err := tar.NewReader(&buf).Next()
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name != "f" || hdr.Mode != 0o755 {
			t.Errorf("header %q mode %o, want f 755", hdr.Name, hdr.Mode)
		}
	})
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

func TestCpLimitFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"cp", "--max-bytes", "-1", "r:x", "./out"}, 2, "cannot be negative"},
		{[]string{"cp", "r:x", "./out", "--max-entries", "-5"}, 2, "cannot be negative"},
		{[]string{"cp", "--max-bytes", "lots", "r:x", "./out"}, 2, "invalid value"},
		// Accepted flags reach the copy, which refuses two local paths.
		{[]string{"cp", "--max-bytes", "10", "--max-entries", "5", "./a", "./b"}, 0, "exactly one of SRC and DST"},
	} {
		code, err := run(context.Background(), tc.args, nil, io.Discard, io.Discard)
		if code != tc.code || err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: code %d, error %v; want %d and one saying %q", tc.args, code, err, tc.code, tc.wantErr)
		}
	}
}
