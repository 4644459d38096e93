package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

// copyFiles copies between the local disk and a runner, as tar over exec; the
// tar on this side is Go's own, so only the runner needs a tar binary.
func copyFiles(ctx context.Context, g globals, src, dst string, stderr io.Writer) error {
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
		go func() { pw.CloseWithError(writeTar(pw, srcPath)) }()
		err = claim.CopyTo(ctx, api, rn, pr, dstPath, stderr)
		pr.CloseWithError(err)
		return err
	default:
		rn, api, err := runnerAndNomad(ctx, g, srcRunner)
		if err != nil {
			return err
		}
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			err := readTar(pr, dstPath)
			// tar pads its stream past the end marker; read it all, or the
			// exec session blocks writing the padding.
			_, _ = io.Copy(io.Discard, pr)
			errc <- err
		}()
		err = claim.CopyFrom(ctx, api, rn, srcPath, pw, stderr)
		pw.CloseWithError(err)
		if untarErr := <-errc; err == nil {
			err = untarErr
		}
		return err
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

// writeTar writes src (a file or a folder) to w under its base name.
func writeTar(w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	base := filepath.Dir(filepath.Clean(src))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	return tw.Close()
}

// readTar unpacks r into dir, refusing entries that would land outside it.
func readTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack into %s: %w", dir, err)
		}
		target := filepath.Join(root, filepath.FromSlash(hdr.Name))
		if target != root && !strings.HasPrefix(target, root+string(filepath.Separator)) {
			return fmt.Errorf("unpack into %s: entry %q leaves the folder", dir, hdr.Name)
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			// A link may only point inside the folder, or a later entry could be
			// written through it to anywhere on this machine.
			resolved := filepath.Join(filepath.Dir(target), hdr.Linkname)
			if filepath.IsAbs(hdr.Linkname) || (resolved != root && !strings.HasPrefix(resolved, root+string(filepath.Separator))) {
				return fmt.Errorf("unpack into %s: link %q points outside the folder", dir, hdr.Name)
			}
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		}
	}
}
