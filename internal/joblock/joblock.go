// Package joblock keeps two processes from running the same job on the
// same checkpoint directory.
//
// Two processors of one job would restore the same checkpoint, fence each
// other's transactional ids, write checkpoints with clashing ids into one
// directory and commit each other's transactions: duplicates or loss,
// whichever wins a race. So a processor takes an exclusive lock on
// <checkpoint dir>/<job>.lock before it touches the cluster or the
// checkpoints, and a second one refuses to start, naming the lock file
// and the pid written in it.
//
// The lock is flock(2) on the file, not the file's existence: the kernel
// drops it when the holder dies, so a lock left by a process killed with
// SIGKILL is taken over by the next start without anyone deleting
// anything. The file itself stays (removing it would let a third process
// lock a new file while a second still holds the old one). flock locks are
// per open file description and work on local filesystems; on NFS they may
// be emulated or absent, so keep checkpoint directories shared between
// machines on object storage, not NFS.
package joblock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock is a held job lock. Release it when the job ended; the process's
// death releases it too.
type Lock struct {
	f    *os.File
	path string
}

// HeldError says another live process holds the lock.
type HeldError struct {
	Path string
	// PID is the holder's pid as it wrote it in the file; 0 when the file
	// held none (a holder that had not written it yet).
	PID int
}

func (e *HeldError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("job lock %s is held by %s: another processor runs this job on the same checkpoint directory; stop it first (two processes of one job would fence each other and break exactly-once)", e.Path, holder)
}

// Path is the lock file of job under checkpoint directory dir.
func Path(dir, job string) string { return filepath.Join(dir, job+".lock") }

// Acquire takes the lock at path without waiting, creating the file (and
// its directory) if needed, and writes the caller's pid into it. When a
// live process holds it, the error is a *HeldError naming the file and
// that process's pid.
func Acquire(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("job lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("job lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: readPID(f)}
		}
		return nil, fmt.Errorf("job lock %s: %w", path, err)
	}
	if err := writePID(f); err != nil {
		_ = f.Close() // closing drops the lock
		return nil, fmt.Errorf("job lock %s: writing the pid: %w", path, err)
	}
	return &Lock{f: f, path: path}, nil
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Release drops the lock. The file stays; a second call does nothing.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing the only descriptor drops the flock.
	if err := f.Close(); err != nil {
		return fmt.Errorf("job lock %s: %w", l.path, err)
	}
	return nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
