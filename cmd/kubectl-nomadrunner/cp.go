package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

// Default bounds of one copy out of a runner. The stream comes from code in
// the runner, which may try to fill the local disk or its inodes; the flags
// raise them for a legitimately big copy.
const (
	defaultMaxBytes   = 4 << 30
	defaultMaxEntries = 1_000_000
)

// maxTrailer bounds what may follow the tar end marker: tar pads its stream to
// a whole record (10 KiB for GNU tar), never more.
const maxTrailer = 1 << 20

// extractLimits bound one copy out of a runner.
type extractLimits struct {
	// MaxBytes is the total size of all regular files.
	MaxBytes int64
	// MaxEntries counts every entry: files, folders and symlinks.
	MaxEntries int
}

// copyFiles copies between the local disk and a runner, as tar over exec; the
// tar on this side is Go's own, so only the runner needs a tar binary.
func copyFiles(ctx context.Context, g globals, src, dst string, lim extractLimits, stderr io.Writer) error {
	srcRunner, srcPath, srcRemote := splitRemote(src)
	dstRunner, dstPath, dstRemote := splitRemote(dst)
	switch {
	case srcRemote == dstRemote:
		return errors.New("cp: exactly one of SRC and DST must be RUNNER:PATH")
	case dstRemote:
		rn, api, err := runnerAndNomad(ctx, g, dstRunner)
		if err != nil {
			return err
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTar(pw, srcPath, stderr)) }()
		err = claim.CopyTo(ctx, api, rn, pr, dstPath, stderr)
		pr.CloseWithError(err)
		return err
	default:
		rn, api, err := runnerAndNomad(ctx, g, srcRunner)
		if err != nil {
			return err
		}
		return receiveTar(ctx, dstPath, lim, func(ctx context.Context, w io.Writer) error {
			return claim.CopyFrom(ctx, api, rn, srcPath, w, stderr)
		})
	}
}

// splitRemote reads RUNNER:PATH; a local path with a colon can be written ./a:b.
func splitRemote(arg string) (runner, path string, remote bool) {
	if strings.HasPrefix(arg, ".") || strings.HasPrefix(arg, "/") {
		return "", arg, false
	}
	runner, path, remote = strings.Cut(arg, ":")
	if !remote {
		return "", arg, false
	}
	return runner, path, true
}

// receiveTar unpacks into dir the tar stream that produce writes (the runner's
// tar). When unpacking fails, produce's context is cancelled so a runner that
// keeps sending is cut off rather than read to its end.
func receiveTar(ctx context.Context, dir string, lim extractLimits, produce func(context.Context, io.Writer) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := extractTar(pr, dir, lim)
		if err == nil {
			err = drainTrailer(pr)
		}
		if err != nil {
			cancel()
			// Later writes fail at once instead of blocking the exec session.
			pr.CloseWithError(err)
		}
		errc <- err
	}()
	produceErr := produce(ctx, pw)
	pw.CloseWithError(produceErr)
	extractErr := <-errc
	// An unpack error that is only produce's own error seen through the pipe
	// says less than produce's error itself.
	if extractErr != nil && (produceErr == nil || !errors.Is(extractErr, produceErr)) {
		return extractErr
	}
	return produceErr
}

// drainTrailer reads the padding after the tar end marker, which the runner's
// tar writes and waits to have read.
func drainTrailer(r io.Reader) error {
	n, err := io.Copy(io.Discard, io.LimitReader(r, maxTrailer+1))
	if err != nil {
		return fmt.Errorf("read past the end of the tar stream: %w", err)
	}
	if n > maxTrailer {
		return fmt.Errorf("more than %d bytes after the end of the tar stream", maxTrailer)
	}
	return nil
}

// extractTar unpacks the tar stream r into dir (created if missing). Every
// file, folder and symlink is made through an os.Root opened on dir, so no
// name can resolve outside it whatever earlier entries made. On top of that it
// refuses, naming the entry: absolute names, names with a ".." component,
// hard links, devices, fifos and other special entries, symlinks whose target
// is absolute or leaves dir, and any entry below a symlink (a tar of a real
// tree never has one, so each entry lands exactly at its name). Symlinks that
// stay inside dir are kept. Regular files keep only their permission bits.
// The total file size and the entry count are bounded by lim.
func extractTar(r io.Reader, dir string, lim extractLimits) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	defer root.Close()
	x := &extractor{root: root, lim: lim, dirs: map[string]bool{".": true}}
	tr := tar.NewReader(r)
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		// The reader may flag a non-local name (GODEBUG tarinsecurepath=0);
		// extract refuses it with the entry's name.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return fmt.Errorf("unpack into %s: read the tar stream: %w", dir, err)
		}
		if entries >= lim.MaxEntries {
			return fmt.Errorf("unpack into %s: entry %q: more than %d entries (raise --max-entries)", dir, hdr.Name, lim.MaxEntries)
		}
		if err := x.extract(hdr, tr); err != nil {
			return fmt.Errorf("unpack into %s: entry %q: %w", dir, hdr.Name, err)
		}
	}
}

type extractor struct {
	root  *os.Root
	lim   extractLimits
	bytes int64
	// dirs are the names known to be real folders, not symlinks. No entry
	// can turn a folder into anything else, so they stay real folders.
	dirs map[string]bool
}

func (x *extractor) extract(hdr *tar.Header, body io.Reader) error {
	name, err := checkEntry(hdr)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the destination itself, which exists
	}
	if hdr.Typeflag == tar.TypeReg {
		if hdr.Size > x.lim.MaxBytes-x.bytes {
			return fmt.Errorf("more than %d bytes of files in all (raise --max-bytes)", x.lim.MaxBytes)
		}
		x.bytes += hdr.Size
	}
	if err := x.parents(name); err != nil {
		return err
	}
	existing, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case existing.IsDir():
		if hdr.Typeflag == tar.TypeDir {
			x.dirs[name] = true
			return nil
		}
		return errors.New("a folder exists at this name")
	default:
		// Replace a file or symlink, never write through it.
		if err := x.root.Remove(name); err != nil {
			return err
		}
	}
	perm := fs.FileMode(hdr.Mode).Perm()
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.root.Mkdir(name, perm|0o700); err != nil {
			return err
		}
		x.dirs[name] = true
		return nil
	case tar.TypeSymlink:
		return x.root.Symlink(hdr.Linkname, name)
	default: // tar.TypeReg, as checkEntry allows nothing else
		f, err := x.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
}

// parents makes sure every folder above name is a real folder, creating the
// missing ones, so the entry lands at its own name and not through a link.
func (x *extractor) parents(name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		if x.dirs[p] {
			continue
		}
		fi, err := x.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := x.root.Mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("it is below %q, a symlink", p)
		case !fi.IsDir():
			return fmt.Errorf("it is below %q, which is not a folder", p)
		}
		x.dirs[p] = true
	}
	return nil
}

// checkEntry decides from its header alone whether an entry may be unpacked,
// and returns its clean name relative to the destination ("." for the
// destination itself).
func checkEntry(hdr *tar.Header) (string, error) {
	name, err := localName(hdr.Name)
	if err != nil {
		return "", err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		if err := checkLinkTarget(path.Dir(name), hdr.Linkname); err != nil {
			return "", err
		}
	case tar.TypeLink:
		return "", fmt.Errorf("hard link to %q refused", hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return "", errors.New("device file refused")
	case tar.TypeFifo:
		return "", errors.New("fifo refused")
	default:
		return "", fmt.Errorf("entry type %q refused: only files, folders and symlinks are copied", hdr.Typeflag)
	}
	if name == "." && hdr.Typeflag != tar.TypeDir {
		return "", errors.New("names the destination folder itself")
	}
	return name, nil
}

// localName cleans a tar entry name, refusing one that is empty, absolute or
// has a ".." component (even one that cleaning would remove).
func localName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if path.IsAbs(name) {
		return "", errors.New("absolute name")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`name has a ".." component`)
		}
	}
	return path.Clean(name), nil
}

// checkLinkTarget accepts a symlink target that, resolved from the link's
// folder dir (relative to the boundary, "." for the boundary itself), stays
// inside the boundary. Its ".." components must all lead: a ".." after a name
// that is itself a symlink climbs from the link's target, not lexically, so it
// could not be checked without following links.
func checkLinkTarget(dir, target string) error {
	if target == "" {
		return errors.New("symlink with an empty target")
	}
	if path.IsAbs(target) {
		return fmt.Errorf("symlink to the absolute path %q", target)
	}
	ups, named := 0, false
	for _, part := range strings.Split(target, "/") {
		switch part {
		case "", ".":
		case "..":
			if named {
				return fmt.Errorf(`symlink to %q has ".." after a name`, target)
			}
			ups++
		default:
			named = true
		}
	}
	depth := 0
	if dir != "." {
		depth = strings.Count(dir, "/") + 1
	}
	if ups > depth {
		return fmt.Errorf("symlink to %q leaves the folder", target)
	}
	return nil
}

// writeTar writes src (a file or a folder) to w under its own base name. Only
// what is below src goes in, with relative names: symlinks are stored as
// symlinks, never followed, and refused when they point outside src; fifos,
// sockets and devices are skipped with a note on stderr. src itself is
// followed when it is a symlink, as the user named it.
func writeTar(w io.Writer, src string, stderr io.Writer) error {
	top, real, err := sourcePaths(src)
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	info, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	tw := tar.NewWriter(w)
	if info.IsDir() {
		// Read through a Root so nothing outside src is read, even if the tree
		// changes while it is packed.
		root, rerr := os.OpenRoot(real)
		if rerr != nil {
			return fmt.Errorf("pack %s: %w", src, rerr)
		}
		defer root.Close()
		err = packTree(tw, root.FS(), top, stderr)
	} else {
		err = packFile(tw, top, info, func() (io.ReadCloser, error) { return os.Open(real) })
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	return tw.Close()
}

// sourcePaths returns the name src is stored under and the path to read it
// from, following src if it is a symlink.
func sourcePaths(src string) (top, real string, err error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return "", "", err
	}
	top = filepath.Base(abs)
	if top == string(filepath.Separator) {
		top = "."
	}
	real, err = filepath.EvalSymlinks(abs)
	return top, real, err
}

// packTree writes every entry of fsys under top.
func packTree(tw *tar.Writer, fsys fs.FS, top string, stderr io.Writer) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		name := path.Join(top, p)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				return err
			}
			if err := checkLinkTarget(path.Dir(p), target); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			return writeHeader(tw, name, info, target)
		case info.IsDir():
			return writeHeader(tw, name, info, "")
		case info.Mode().IsRegular():
			return packFile(tw, name, info, func() (io.ReadCloser, error) { return fsys.Open(p) })
		default:
			fmt.Fprintf(stderr, "cp: skipping %s: not a file, folder or symlink\n", p)
			return nil
		}
	})
}

func packFile(tw *tar.Writer, name string, info fs.FileInfo, open func() (io.ReadCloser, error)) error {
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file or folder", name)
	}
	f, err := open()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeHeader(tw, name, info, ""); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

func writeHeader(tw *tar.Writer, name string, info fs.FileInfo, link string) error {
	if _, err := localName(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	hdr.Mode = int64(info.Mode().Perm())
	return tw.WriteHeader(hdr)
}
