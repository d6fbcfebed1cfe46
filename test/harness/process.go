package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a helper program (e.g. the kratos client) whose stdout is a
// stream of JSON lines. Lines are collected as they arrive; stderr goes to a
// log file printed when the test fails. The process is killed when the test
// ends; its stdin stays open until CloseStdin, so a program that stops on
// stdin EOF also stops if the test binary dies.
type Process struct {
	Name    string
	LogPath string

	tb      testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	exitErr error

	mu      sync.Mutex
	lines   [][]byte
	changed chan struct{} // closed and replaced on every new line
	readers sync.WaitGroup
}

// helpers holds the pids of running helper programs, so the fault fabric
// knows their connections come from no node.
var helpers struct {
	mu   sync.Mutex
	pids map[int]bool
}

func helperPIDs() []int {
	helpers.mu.Lock()
	defer helpers.mu.Unlock()
	out := make([]int, 0, len(helpers.pids))
	for p := range helpers.pids {
		out = append(out, p)
	}
	return out
}

func setHelper(pid int, on bool) {
	helpers.mu.Lock()
	defer helpers.mu.Unlock()
	if helpers.pids == nil {
		helpers.pids = map[int]bool{}
	}
	if on {
		helpers.pids[pid] = true
	} else {
		delete(helpers.pids, pid)
	}
}

// StartProcess starts bin with args and env (added to the inherited
// environment) and collects its stdout lines.
func StartProcess(tb testing.TB, name, bin string, args []string, env map[string]string) *Process {
	tb.Helper()
	p := &Process{Name: name, tb: tb, done: make(chan struct{}), changed: make(chan struct{})}
	p.LogPath = filepath.Join(tb.TempDir(), name+".log")
	logf, err := os.Create(p.LogPath)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = mergeEnv(os.Environ(), env, "")
	cmd.Stderr = logf
	cmd.SysProcAttr = childSysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("harness: start %s: %v", name, err)
	}
	setHelper(cmd.Process.Pid, true)
	p.readers.Add(1)
	go func() {
		defer p.readers.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := bytes.Clone(sc.Bytes())
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		// Wait closes stdout only after the reader has drained it.
		p.readers.Wait()
		p.exitErr = cmd.Wait()
		setHelper(cmd.Process.Pid, false)
		logf.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.stdin.Close()
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		if tb.Failed() || os.Getenv(EnvLogs) == "1" {
			b, _ := os.ReadFile(p.LogPath)
			tb.Logf("==== %s stdout ====\n%s==== %s stderr (exit %v) ====\n%s==== end of %s ====",
				name, bytes.Join(p.Lines(), []byte("\n")), name, p.exitErr, tail(string(b), 128<<10), name)
		}
	})
	return p
}

// Lines returns a copy of the stdout lines seen so far.
func (p *Process) Lines() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.lines...)
}

// WaitLine waits until a line with index >= from satisfies match, and
// returns its index and the line. The process exiting without such a line,
// or timeout passing, fails the test.
func (p *Process) WaitLine(tb testing.TB, from int, timeout time.Duration, what string, match func(line []byte) bool) (int, []byte) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		lines, changed := p.lines, p.changed
		p.mu.Unlock()
		for i := from; i < len(lines); i++ {
			if match(lines[i]) {
				return i, lines[i]
			}
		}
		select {
		case <-changed:
		case <-p.done:
			// Re-check once: lines may have arrived before the exit.
			p.mu.Lock()
			lines = p.lines
			p.mu.Unlock()
			for i := from; i < len(lines); i++ {
				if match(lines[i]) {
					return i, lines[i]
				}
			}
			tb.Fatalf("%s: %s exited (%v) without it", what, p.Name, p.exitErr)
		case <-deadline.C:
			tb.Fatalf("%s: not seen from %s within %s", what, p.Name, timeout)
		}
	}
}

// WaitEvent waits for a JSON line whose fields decode into v and satisfy
// match; v is left holding that line. Lines that do not decode are skipped.
func WaitEvent[T any](tb testing.TB, p *Process, from int, timeout time.Duration, what string, match func(T) bool) (int, T) {
	tb.Helper()
	var got T
	i, _ := p.WaitLine(tb, from, timeout, what, func(line []byte) bool {
		var v T
		if json.Unmarshal(line, &v) != nil || !match(v) {
			return false
		}
		got = v
		return true
	})
	return i, got
}

// Send writes one line to the process's stdin.
func (p *Process) Send(tb testing.TB, line string) {
	tb.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		tb.Fatalf("harness: write to %s: %v", p.Name, err)
	}
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// CloseStdin closes the process's stdin.
func (p *Process) CloseStdin() { _ = p.stdin.Close() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the exit (bounded by timeout) and returns the exit error.
func (p *Process) Wait(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	select {
	case <-p.done:
		return p.exitErr
	case <-time.After(timeout):
		tb.Fatalf("harness: %s did not exit within %s", p.Name, timeout)
		return nil
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// String names the process in messages.
func (p *Process) String() string { return fmt.Sprintf("%s(pid %d)", p.Name, p.cmd.Process.Pid) }
