//go:build unix

package api

import "syscall"

// fdLimit is the process's open-file limit (soft; Go raises it to the hard
// limit at start), 0 when unknown.
func fdLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}
