//go:build containers

package containers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// kratosEvent is one line of kratosclient's stdout.
type kratosEvent struct {
	Event     string     `json:"event"`
	AppID     string     `json:"appid"`
	Nodes     []string   `json:"nodes"`
	Current   string     `json:"current"`
	Instances []instance `json:"instances"`
	Error     string     `json:"error"`
	raw       string
	at        time.Time
}

// kratosClient is the kratos v0.6.0 client (test/kratos/kratosclient) in a
// container on the cluster network. The container is attached to this
// process's stdin pipe: closing it (or this process dying) makes the client
// cancel its registration and exit, and --rm removes it.
type kratosClient struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	done   chan struct{}

	mu     sync.Mutex
	events []kratosEvent
	notify chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startKratos runs kratosclient with the given seed nodes and arguments.
func startKratos(t *testing.T, c *cluster, name, hostname string, seeds []string, args ...string) *kratosClient {
	t.Helper()
	k := &kratosClient{
		t:      t,
		name:   c.project + "-" + name,
		stderr: &lockedBuffer{},
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
	dockerArgs := []string{"run", "--rm", "-i", "--pull", "never",
		"--name", k.name, "--network", c.network(), "--hostname", hostname,
		"-e", "DISCOVERY_NODES=" + strings.Join(seeds, ","),
		"-e", "ZONE=" + testZone, "-e", "DEPLOY_ENV=" + testEnv, "-e", "REGION=region01",
		"-e", "HOSTNAME=" + hostname,
		suite.kratosImage}
	k.cmd = exec.Command("docker", append(dockerArgs, args...)...)
	var err error
	if k.stdin, err = k.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := k.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	k.cmd.Stderr = k.stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kratosclient %s: %v", name, err)
	}
	go k.read(stdout)
	// Runs before the cluster's teardown (cleanups are LIFO), so the
	// network is free when compose removes it.
	t.Cleanup(func() {
		k.stop(20 * time.Second)
		if t.Failed() {
			t.Logf("kratosclient %s events:\n%s\nstderr (last 4 KiB):\n%s", name, k.dump(), tail(k.stderr.String(), 4096))
		}
	})
	return k
}

func (k *kratosClient) read(r io.Reader) {
	defer close(k.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev kratosEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			ev = kratosEvent{Event: "unparsed", Error: err.Error()}
		}
		ev.raw, ev.at = line, time.Now()
		k.mu.Lock()
		k.events = append(k.events, ev)
		k.mu.Unlock()
		select {
		case k.notify <- struct{}{}:
		default:
		}
	}
	_ = k.cmd.Wait()
}

// stop closes stdin (the client cancels and exits) and waits; after the
// grace period the container is removed by force.
func (k *kratosClient) stop(grace time.Duration) {
	_ = k.stdin.Close()
	select {
	case <-k.done:
	case <-time.After(grace):
		_, _ = command(context.Background(), time.Minute, nil, "docker", "rm", "-f", k.name)
		<-k.done
	}
}

// waitEvent waits until some event (old or new) satisfies match.
func (k *kratosClient) waitEvent(timeout time.Duration, what string, match func(kratosEvent) bool) kratosEvent {
	k.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		k.mu.Lock()
		evs := k.events[seen:]
		seen = len(k.events)
		k.mu.Unlock()
		for _, ev := range evs {
			if ev.Event == "error" {
				k.t.Fatalf("kratosclient %s: error event: %s", k.name, ev.raw)
			}
			if match(ev) {
				return ev
			}
		}
		select {
		case <-k.notify:
		case <-k.done:
			k.mu.Lock()
			more := len(k.events) > seen
			k.mu.Unlock()
			if !more {
				k.t.Fatalf("kratosclient %s exited before %s; events:\n%s\nstderr:\n%s", k.name, what, k.dump(), tail(k.stderr.String(), 4096))
			}
		case <-deadline.C:
			k.t.Fatalf("kratosclient %s: no %s within %s; events:\n%s", k.name, what, timeout, k.dump())
		}
	}
}

func (k *kratosClient) snapshot() []kratosEvent {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]kratosEvent(nil), k.events...)
}

func (k *kratosClient) dump() string {
	var b strings.Builder
	for _, ev := range k.snapshot() {
		b.WriteString(ev.at.Format("15:04:05.000 "))
		b.WriteString(tail(ev.raw, 600))
		b.WriteByte('\n')
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// learnedAll reports whether a nodes event lists exactly want.
func learnedAll(want []string) func(kratosEvent) bool {
	return func(ev kratosEvent) bool {
		return ev.Event == "nodes" && strings.Join(ev.Nodes, ",") == strings.Join(want, ",")
	}
}
