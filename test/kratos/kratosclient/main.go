// Command kratosclient drives the real kratos v0.6.0 discovery client
// (github.com/go-kratos/kratos/pkg/naming/discovery) against a discovery
// cluster, so the compatibility test in the main module can check the server
// with an unmodified client. It is test tooling, not a product.
//
// Configuration comes from the environment variables kratos itself reads:
// DISCOVERY_NODES (comma-separated host:port seeds), REGION, ZONE,
// DEPLOY_ENV and HOSTNAME. Every event is one JSON object on its own line on
// stdout; kratos' own log lines go to stderr.
//
//	kratosclient register --appid A --addr grpc://127.0.0.1:9000 [--addr ...]
//	                      [--version v] [--status 1] [--metadata '{"k":"v"}'] [--hold]
//	kratosclient watch --appid A [--appid B ...]
//	kratosclient fetch --appid A [--timeout 10s]
//
// register: registers through kratos' Register (which renews every 30 s and
// re-registers on -404), prints {"event":"registered"}; with --hold it stays
// up until SIGTERM/SIGINT or stdin is closed, then cancels and prints
// {"event":"cancelled"}.
// watch: Build + Watch for each appid, prints {"event":"instances"} for each
// notification, and {"event":"nodes"} whenever the node list kratos learned
// from infra.discovery, or the node it would use next, changes.
// fetch: Build, wait for the first notification, print it, exit.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/go-kratos/kratos/pkg/naming"
	"github.com/go-kratos/kratos/pkg/naming/discovery"
)

// out serialises event lines from several goroutines.
var outMu sync.Mutex

func emit(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n')) // the parent reads the lines; a closed pipe ends the run anyway
}

func fail(format string, args ...any) {
	emit(map[string]any{"event": "error", "error": fmt.Sprintf(format, args...)})
	os.Exit(1)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kratosclient register|watch|fetch [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "register":
		register(args)
	case "watch":
		watch(args)
	case "fetch":
		fetch(args)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
		os.Exit(2)
	}
}

// stopped is closed on SIGTERM/SIGINT or when stdin reaches EOF, so a test
// that dies (closing our stdin) never leaves a client behind.
func stopped() <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(ch) }) }
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop() }()
	go func() { _, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin)); stop() }()
	return ch
}

// newDiscovery builds the kratos client from its environment variables.
// discovery.New blocks until a poll of infra.discovery returned at least one
// node (spec 8.1) and panics on bad config; both are what a real service sees.
func newDiscovery() *discovery.Discovery {
	d := discovery.New(nil)
	emit(map[string]any{"event": "ready"})
	return d
}

func register(args []string) {
	fs := flag.NewFlagSet("register", flag.ExitOnError)
	var addrs, appids multi
	fs.Var(&appids, "appid", "appid to register (exactly one)")
	fs.Var(&addrs, "addr", "scheme://host:port (repeatable)")
	version := fs.String("version", "", "instance version")
	status := fs.Int64("status", 0, "1 UP, 2 WAITING (0: kratos sends 1)")
	metadata := fs.String("metadata", "", "JSON object of string values")
	hold := fs.Bool("hold", false, "stay registered until SIGTERM or stdin EOF, then cancel")
	_ = fs.Parse(args)
	if len(appids) != 1 || len(addrs) == 0 {
		fail("register needs one --appid and at least one --addr")
	}
	ins := &naming.Instance{AppID: appids[0], Addrs: addrs, Version: *version, Status: *status}
	if *metadata != "" {
		if err := json.Unmarshal([]byte(*metadata), &ins.Metadata); err != nil {
			fail("--metadata: %v", err)
		}
	}
	stop := stopped()
	d := newDiscovery()
	go reportNodes(d, stop)
	cancel, err := d.Register(context.Background(), ins)
	if err != nil {
		fail("register: %v", err)
	}
	emit(map[string]any{"event": "registered", "appid": ins.AppID, "addrs": ins.Addrs})
	if !*hold {
		return
	}
	<-stop
	// kratos' cancel func stops the renew loop, POSTs cancel and waits for it.
	cancel()
	emit(map[string]any{"event": "cancelled", "appid": ins.AppID})
	_ = d.Close()
}

func watch(args []string) {
	fs := flag.NewFlagSet("watch", flag.ExitOnError)
	var appids multi
	fs.Var(&appids, "appid", "appid to watch (repeatable)")
	_ = fs.Parse(args)
	if len(appids) == 0 {
		fail("watch needs --appid")
	}
	stop := stopped()
	d := newDiscovery()
	go reportNodes(d, stop)
	for _, appid := range appids {
		r := d.Build(appid)
		go func() {
			for {
				select {
				case <-stop:
					return
				case _, ok := <-r.Watch():
					if !ok {
						return
					}
					if info, ok := r.Fetch(context.Background()); ok {
						emit(instancesEvent(appid, info))
					}
				}
			}
		}()
	}
	emit(map[string]any{"event": "watching", "appids": []string(appids)})
	<-stop
	_ = d.Close()
}

func fetch(args []string) {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	var appids multi
	fs.Var(&appids, "appid", "appid to fetch (exactly one)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the first answer")
	_ = fs.Parse(args)
	if len(appids) != 1 {
		fail("fetch needs one --appid")
	}
	d := newDiscovery()
	r := d.Build(appids[0])
	select {
	case <-r.Watch():
	case <-time.After(*timeout):
		fail("fetch %s: no instance within %s", appids[0], *timeout)
	}
	info, ok := r.Fetch(context.Background())
	if !ok {
		fail("fetch %s: resolver has no data", appids[0])
	}
	emit(instancesEvent(appids[0], info))
	_ = d.Close()
}

type instanceOut struct {
	Zone     string            `json:"zone"`
	Env      string            `json:"env"`
	AppID    string            `json:"appid"`
	Hostname string            `json:"hostname"`
	Addrs    []string          `json:"addrs"`
	Version  string            `json:"version"`
	Status   int64             `json:"status"`
	Metadata map[string]string `json:"metadata"`
	LastTs   int64             `json:"latest_timestamp"`
}

func instancesEvent(appid string, info *naming.InstancesInfo) map[string]any {
	var list []instanceOut
	for _, zone := range info.Instances {
		for _, in := range zone {
			list = append(list, instanceOut{in.Zone, in.Env, in.AppID, in.Hostname, in.Addrs, in.Version, in.Status, in.Metadata, in.LastTs})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Hostname < list[j].Hostname })
	return map[string]any{"event": "instances", "appid": appid, "latest_timestamp": info.LastTs, "instances": list}
}

// reportNodes prints the node list the client learned from infra.discovery
// and the node it would pick next, whenever either changes. kratos exposes
// neither (no accessor, no log line), so this reads the unexported fields
// `node` (atomic.Value holding []string) and `nodeIdx` (uint64) of the pinned
// v0.6.0 Discovery; pickNode computes node[nodeIdx%len]. Test
// instrumentation only: if the layout ever changes it reports an error event
// instead of crashing.
func reportNodes(d *discovery.Discovery, stop <-chan struct{}) {
	v := reflect.ValueOf(d).Elem()
	nodeF, idxF := v.FieldByName("node"), v.FieldByName("nodeIdx")
	if !nodeF.IsValid() || nodeF.Type() != reflect.TypeOf(atomic.Value{}) ||
		!idxF.IsValid() || idxF.Kind() != reflect.Uint64 {
		emit(map[string]any{"event": "error", "error": errors.New("kratos Discovery layout changed: node list not observable").Error()})
		return
	}
	nodeV := (*atomic.Value)(unsafe.Pointer(nodeF.UnsafeAddr()))
	idx := (*uint64)(unsafe.Pointer(idxF.UnsafeAddr()))
	var last string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		nodes, _ := nodeV.Load().([]string)
		current := ""
		if len(nodes) > 0 {
			current = nodes[atomic.LoadUint64(idx)%uint64(len(nodes))]
		}
		sorted := append([]string(nil), nodes...)
		sort.Strings(sorted)
		key := strings.Join(sorted, ",") + "|" + current
		if key != last {
			last = key
			emit(map[string]any{"event": "nodes", "nodes": sorted, "current": current})
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
