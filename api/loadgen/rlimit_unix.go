//go:build unix

package loadgen

import (
	"fmt"
	"syscall"
)

// raiseNoFile makes sure the process may hold need open files (one per
// parked poll plus workers): it raises the soft RLIMIT_NOFILE, and the hard
// one when permitted. It returns a note when it changed the limit.
func raiseNoFile(need uint64) (string, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return "", fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if l.Cur >= need {
		return "", nil
	}
	old := l
	l.Cur = need
	if l.Max < need {
		l.Max = need // succeeds only with privilege
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return "", fmt.Errorf("need %d open files, RLIMIT_NOFILE is %d (hard %d) and cannot be raised: %w", need, old.Cur, old.Max, err)
	}
	return fmt.Sprintf("raised RLIMIT_NOFILE from %d to %d", old.Cur, need), nil
}
