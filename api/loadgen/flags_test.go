package loadgen

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// Bad flags exit 2 before any traffic, with a message naming the flag.
func TestMain_BadFlags(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no scenario", nil, "missing scenario"},
		{"unknown scenario", []string{"dance"}, `unknown scenario "dance"`},
		{"unknown flag", []string{"register", "--bogus"}, "bogus"},
		{"unparsable int", []string{"register", "--concurrency", "x"}, "concurrency"},
		{"concurrency 0", []string{"register", "--concurrency", "0"}, "--concurrency"},
		{"concurrency huge", []string{"register", "--concurrency", "20000"}, "--concurrency"},
		{"negative count", []string{"register", "--count", "-1"}, "--count"},
		{"negative duration", []string{"register", "--duration", "-1s"}, "--duration"},
		{"unbounded", []string{"register", "--count", "0"}, "--count, --duration"},
		{"bad duration", []string{"renew", "--duration", "soon"}, "duration"},
		{"negative rate", []string{"register", "--rate", "-5"}, "--rate"},
		{"empty nodes", []string{"register", "--nodes", " , "}, "--nodes"},
		{"node without port", []string{"register", "--nodes", "127.0.0.1"}, "--nodes"},
		{"node bad port", []string{"register", "--nodes", "127.0.0.1:99999"}, "--nodes"},
		{"node no host", []string{"register", "--nodes", ":7171"}, "--nodes"},
		{"replication one node", []string{"replication", "--nodes", "127.0.0.1:7171"}, "--nodes"},
		{"cross-notify one node", []string{"cross-notify"}, "--nodes"},
		{"empty env", []string{"register", "--env", ""}, "--env"},
		{"empty zone", []string{"register", "--zone", ""}, "--zone"},
		{"empty prefix", []string{"register", "--app-prefix", ""}, "--app-prefix"},
		{"appids 0", []string{"register", "--appids", "0"}, "--appids"},
		{"instances 0", []string{"register", "--instances", "0"}, "--instances"},
		{"instances < appids", []string{"fetchs", "--appids", "20", "--instances", "10"}, "--instances"},
		{"batch > appids", []string{"fetchs", "--appids", "5", "--batch", "6"}, "--batch"},
		{"pollers 0", []string{"notify", "--pollers", "0"}, "--pollers"},
		{"timeout 0", []string{"register", "--timeout", "0s"}, "--timeout"},
		{"poll-timeout small", []string{"notify", "--poll-timeout", "10ms"}, "--poll-timeout"},
		{"settle 0", []string{"notify", "--settle", "0s"}, "--settle"},
		{"extra argument", []string{"register", "--count", "1", "more"}, `unexpected argument "more"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(t.Context(), c.args, &out, &errb)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitUsage, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Fatalf("stderr lacks %q:\n%s", c.want, errb.String())
			}
			if out.Len() != 0 {
				t.Fatalf("stdout not empty: %q", out.String())
			}
		})
	}
}

func TestMain_Help(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Usage: discovery bench <scenario>", "cross-notify", "-pollers", "-nodes"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, errb.String())
		}
	}
}

// Flags may come before the scenario; --count defaults depend on the
// scenario and on --duration.
func TestParseArgs_Defaults(t *testing.T) {
	for _, c := range []struct {
		args     []string
		scenario string
		count    int64
		duration time.Duration
		nodes    int
		wantJSON bool
	}{
		{[]string{"register"}, ScenarioRegister, 10000, 0, 1, false},
		{[]string{"--json", "--nodes", "a:1,b:2", "fetchs"}, ScenarioFetchs, 10000, 0, 2, true},
		{[]string{"renew", "--duration", "5s"}, ScenarioRenew, 0, 5 * time.Second, 1, false},
		{[]string{"renew", "--duration", "5s", "--count", "7"}, ScenarioRenew, 7, 5 * time.Second, 1, false},
		{[]string{"notify"}, ScenarioNotify, 1, 0, 1, false},
		{[]string{"replication", "--nodes", "a:1,b:2,c:3"}, ScenarioReplication, 200, 0, 3, false},
	} {
		var errb bytes.Buffer
		cfg, code, ok := parseArgs(c.args, &errb)
		if !ok {
			t.Fatalf("%v: exit %d: %s", c.args, code, errb.String())
		}
		if cfg.Scenario != c.scenario || cfg.Count != c.count || cfg.Duration != c.duration || len(cfg.Nodes) != c.nodes || cfg.JSON != c.wantJSON {
			t.Errorf("%v: got %+v", c.args, cfg)
		}
	}
}

// Run refuses an invalid config without sending anything.
func TestRun_InvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Scenario = ScenarioRegister
	cfg.Concurrency = 0
	rep := Run(t.Context(), cfg, &bytes.Buffer{})
	if !strings.Contains(rep.Error, "--concurrency") {
		t.Fatalf("error %q", rep.Error)
	}
}
