package harness

import "syscall"

// childSysProcAttr makes the kernel kill a child when the test binary dies
// (e.g. on a go test -timeout panic), so no node outlives its test.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
