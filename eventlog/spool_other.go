//go:build !unix

package eventlog

import (
	"errors"
	"fmt"
	"os"
)

// lockDir creates path exclusively: without flock a lock file left by a
// crash must be removed by hand, which the error says.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w (remove %s if no publisher runs)", ErrSpoolLocked, path)
		}
		return nil, fmt.Errorf("create spool lock: %w", err)
	}
	return f, nil
}

func unlockDir(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// syncDir is a no-op where directories cannot be fsynced.
func syncDir(string) error { return nil }
