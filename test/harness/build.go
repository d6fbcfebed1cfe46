package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/discovery-go/discovery/internal/testkit"
)

// Environment variables that change how binaries are obtained.
const (
	// EnvBinary names a prebuilt discovery binary to use instead of building
	// ./cmd/discovery (e.g. the one a CI step already built).
	EnvBinary = "DISCOVERY_TEST_BINARY"
	// EnvRace, when "1", builds the discovery binary with -race, so data races
	// inside the server under multi-process load fail the node (and its test).
	EnvRace = "DISCOVERY_TEST_RACE"
	// EnvLogs, when "1", prints every node's log at the end of its test,
	// passed or not.
	EnvLogs = "DISCOVERY_TEST_LOGS"
	// EnvLogDir, when set, is a directory every node's log is copied to at
	// the end of its test (named test-node-pid.log), e.g. for CI artifacts.
	EnvLogDir = "DISCOVERY_TEST_LOG_DIR"
)

// buildTimeout bounds one `go build`; a cold -race build of the server takes
// about a minute on 2 cores.
const buildTimeout = 5 * time.Minute

// state is the per-test-binary state the harness needs: one temp directory
// for built binaries, removed by Main when the tests finish, and one build per
// package. A test binary runs one TestMain, so this is process-wide by nature.
var state struct {
	mu     sync.Mutex
	dir    string // set by Main; "" means Main is not in use
	builds map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// Main is the TestMain of every package that uses the harness:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// It provides the directory built binaries go to, runs the tests, removes the
// directory, and then checks for leaked goroutines (goleak) when the tests
// passed: every proxy, process waiter and HTTP connection the harness starts
// is owned by a test and closed by its cleanup.
func Main(m *testing.M, opts ...goleak.Option) {
	dir, err := os.MkdirTemp("", "discovery-harness-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness: temp dir:", err)
		os.Exit(2)
	}
	state.mu.Lock()
	state.dir = dir
	state.mu.Unlock()

	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(testkit.LeakOptions(opts...)...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines leaked by the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// BuildBinary returns the path of the discovery server binary, building
// ./cmd/discovery of the main module once per test binary (with -race when
// DISCOVERY_TEST_RACE=1). DISCOVERY_TEST_BINARY overrides the build.
func BuildBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("harness: %s=%s: %v", EnvBinary, p, err)
		}
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	var flags []string
	if os.Getenv(EnvRace) == "1" {
		flags = append(flags, "-race")
	}
	return BuildPackage(tb, root, "./cmd/discovery", "discovery", flags...)
}

// BuildPackage builds the main package pkg of the Go module in moduleDir
// into the harness directory, once per test binary for each (moduleDir, pkg,
// flags), and returns the binary's path. It is how the compatibility test
// builds the kratos client of the nested module test/kratos.
func BuildPackage(tb testing.TB, moduleDir, pkg, name string, flags ...string) string {
	tb.Helper()
	state.mu.Lock()
	dir := state.dir
	if dir == "" {
		state.mu.Unlock()
		tb.Fatalf("harness: call harness.Main(m) from TestMain: it owns the build directory")
	}
	if state.builds == nil {
		state.builds = map[string]*buildResult{}
	}
	key := moduleDir + "\x00" + pkg + "\x00" + strings.Join(flags, " ")
	br := state.builds[key]
	if br == nil {
		br = &buildResult{}
		state.builds[key] = br
	}
	n := len(state.builds)
	state.mu.Unlock()

	br.once.Do(func() {
		out := filepath.Join(dir, fmt.Sprintf("%s-%d", name, n))
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		args := append([]string{"build", "-o", out}, flags...)
		args = append(args, pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = moduleDir
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		start := time.Now()
		if err := cmd.Run(); err != nil {
			br.err = fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), moduleDir, err, buf.String())
			return
		}
		br.path = out
		tb.Logf("harness: built %s in %s (%s)", pkg, time.Since(start).Round(time.Millisecond), moduleDir)
	})
	if br.err != nil {
		tb.Fatalf("harness: %v", br.err)
	}
	return br.path
}

// ModuleRoot returns the directory of the main module (the go.mod that the
// current working directory belongs to).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}
