//go:build containers

package containers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/discovery-go/discovery/internal/testkit"
)

// suite holds what TestMain prepared for every test.
var suite struct {
	root        string   // repository root
	compose     []string // compose command: docker compose, or docker-compose
	runID       string   // unique per run: image tags, project names
	image       string   // discovery image built by `make image`
	kratosImage string   // kratos v0.6.0 test client image
}

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) int {
	start := time.Now()
	root, err := filepath.Abs("../..")
	if err != nil {
		return fail("repository root: %v", err)
	}
	suite.root = root
	suite.runID = randomID()
	suite.image = "discovery:ct-" + suite.runID
	suite.kratosImage = "discovery-kratosclient:ct-" + suite.runID

	// No engine is a failure, not a skip: CI runs this suite on purpose.
	out, err := command(context.Background(), 30*time.Second, nil, "docker", "version", "--format", "{{.Server.Version}}")
	if err != nil {
		return fail("no Docker engine answers (`docker version`): %v\n%s", err, out)
	}
	engine := strings.TrimSpace(string(out))
	suite.compose, err = detectCompose()
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "containers: engine %s, compose %q, run %s\n", engine, strings.Join(suite.compose, " "), suite.runID)

	defer removeImages()
	if err := buildImages(); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "containers: images built in %s\n", time.Since(start).Round(time.Second))

	code := m.Run()
	printFigures()
	// Every loader, client reader and server the tests started is stopped
	// by their cleanups; nothing may be left running.
	if err := goleak.Find(testkit.LeakOptions()...); err != nil && code == 0 {
		code = fail("leaked goroutines: %v", err)
	}
	fmt.Fprintf(os.Stderr, "containers: suite took %s\n", time.Since(start).Round(time.Second))
	return code
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "FAIL: containers: "+format+"\n", args...)
	return 1
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// detectCompose picks $COMPOSE, else the v2 plugin, else docker-compose 1.29.
func detectCompose() ([]string, error) {
	if c := strings.TrimSpace(os.Getenv("COMPOSE")); c != "" {
		return strings.Fields(c), nil
	}
	candidates := [][]string{{"docker", "compose"}, {"docker-compose"}}
	for _, c := range candidates {
		args := append(append([]string(nil), c[1:]...), "version")
		if _, err := command(context.Background(), 30*time.Second, nil, c[0], args...); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("neither `docker compose` nor `docker-compose` works")
}

// buildImages runs `make image` for the server and packs the kratos client
// (its own module, built statically) into a scratch image. Neither pulls.
func buildImages() error {
	ctx := context.Background()
	if out, err := command(ctx, 10*time.Minute, nil, "make", "-C", suite.root, "image", "IMAGE="+suite.image); err != nil {
		return fmt.Errorf("make image: %w\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "kratosclient-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "kratosclient"), "./kratosclient")
	build.Dir = filepath.Join(suite.root, "test", "kratos")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build kratosclient: %w\n%s", err, out)
	}
	dockerfile := filepath.Join(suite.root, "test", "containers", "testdata", "kratosclient.Dockerfile")
	if out, err := command(ctx, 5*time.Minute, nil, "docker", "build", "-f", dockerfile, "-t", suite.kratosImage, dir); err != nil {
		return fmt.Errorf("build kratosclient image: %w\n%s", err, out)
	}
	return nil
}

func removeImages() {
	for _, img := range []string{suite.image, suite.kratosImage} {
		_, _ = command(context.Background(), time.Minute, nil, "docker", "rmi", "-f", img)
	}
}

// command runs name args with a time limit and returns combined output.
// env is added to the process environment.
func command(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s: %w", name, strings.Join(args, " "), timeout, err)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out, err
}

// figures are the timings the suite measures, printed at the end for the
// README.
var figures struct {
	mu   sync.Mutex
	list []string
}

func recordFigure(t *testing.T, name string, d time.Duration) {
	t.Helper()
	line := fmt.Sprintf("%-44s %6.1f s  (%s)", name, d.Seconds(), t.Name())
	t.Log("FIGURE " + line)
	figures.mu.Lock()
	figures.list = append(figures.list, line)
	figures.mu.Unlock()
}

func printFigures() {
	figures.mu.Lock()
	defer figures.mu.Unlock()
	if len(figures.list) == 0 {
		return
	}
	sort.Strings(figures.list)
	fmt.Fprintln(os.Stderr, "containers: measured figures:")
	for _, l := range figures.list {
		fmt.Fprintln(os.Stderr, "  "+l)
	}
}
