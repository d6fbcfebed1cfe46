// Package ctl is `discovery ctl`: the operator's command line for a
// running cluster (apps, instances, nodes, status, set, cancel, watch,
// health). It talks to any node, learns the others from infra.discovery
// and fails over between them; it reads the admin API with the admin token
// and writes through the public set and cancel.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	sdk "github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/wire"
)

// subcommand is one ctl command.
type subcommand struct {
	name, args, summary string
	examples            []string
	flags               func(fs *pflag.FlagSet, o *subOpts)
	run                 func(ctx context.Context, r *runner, args []string) error
	nargs               int // exact positional arguments
}

// subOpts are the per-command flags.
type subOpts struct {
	status, prefix, metadata string
	limit                    int
}

func subcommands() []subcommand {
	return []subcommand{
		{name: "apps", summary: "list apps with instance counts per status (admin API)",
			examples: []string{"discovery ctl apps", "discovery ctl apps --prefix demo. --status stale", "discovery ctl apps -o json"},
			flags: func(fs *pflag.FlagSet, o *subOpts) {
				fs.StringVar(&o.status, "status", "", "only apps with an instance in this state: up, waiting, stale")
				fs.StringVar(&o.prefix, "prefix", "", "only appids with this prefix")
				fs.IntVar(&o.limit, "limit", 1000, "at most this many apps")
			}, run: appsCmd},
		{name: "instances", args: "APPID", nargs: 1, summary: "list an app's instances (public fetch; works against any node, legacy ones too)",
			examples: []string{"discovery ctl instances demo.checkout", "discovery ctl instances demo.checkout --zone sh001 --json"}, run: instancesCmd},
		{name: "nodes", summary: "list the nodes of this zone (public /discovery/nodes)",
			examples: []string{"discovery ctl nodes --nodes 10.0.0.5:7171"}, run: nodesCmd},
		{name: "status", summary: "a node's overview: self-preservation, members, replication, legacy nodes (admin API)",
			examples: []string{"discovery ctl status", "discovery ctl status --nodes 10.0.0.6:7171 -o json"}, run: statusCmd},
		{name: "set", args: "APPID HOSTNAME", nargs: 2, summary: "set an instance's status and/or metadata (replicated, audited)",
			examples: []string{"discovery ctl set demo.checkout pod-7f9c --status waiting", `discovery ctl set demo.checkout pod-7f9c --metadata '{"weight":"5"}'`},
			flags: func(fs *pflag.FlagSet, o *subOpts) {
				fs.StringVar(&o.status, "status", "", "up or waiting")
				fs.StringVar(&o.metadata, "metadata", "", "a JSON object of strings: replaces the metadata")
			}, run: setCmd},
		{name: "cancel", args: "APPID HOSTNAME", nargs: 2, summary: "cancel an instance (replicated, audited)",
			examples: []string{"discovery ctl cancel demo.checkout pod-7f9c"}, run: cancelCmd},
		{name: "watch", args: "APPID", nargs: 1, summary: "print an app's UP instances (what clients see) at every change, until interrupted (long-polls)",
			examples: []string{"discovery ctl watch demo.checkout", "discovery ctl watch demo.checkout --json | jq ."}, run: watchCmd},
		{name: "health", summary: "/readyz of every node; exit 0 when all are ready",
			examples: []string{"discovery ctl health --nodes node1:7171,node2:7171"}, run: healthCmd},
	}
}

// runner holds what every command needs.
type runner struct {
	c      *client
	cfg    clientConfig
	json   bool
	stdout io.Writer
	opts   subOpts
}

// Main runs `discovery ctl ARGS` and returns the exit code.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	getenv := func(k string) string {
		for i := len(environ) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(environ[i], k+"="); ok {
				return v
			}
		}
		return ""
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		usage(stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	var sc *subcommand
	for _, s := range subcommands() {
		if s.name == args[0] {
			sc = &s
			break
		}
	}
	if sc == nil {
		fmt.Fprintf(stderr, "discovery ctl: unknown command %q\n\n", args[0])
		usage(stderr)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("discovery ctl "+sc.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	var nodes, token, tokenFile, output string
	var jsonOut bool
	cfg := clientConfig{}
	fs.StringVar(&nodes, "nodes", getenv("DISCOVERY_NODES"), "nodes to talk to, comma-separated host:port (env DISCOVERY_NODES); the others are learned from infra.discovery")
	fs.StringVar(&cfg.env, "env", or(getenv("DEPLOY_ENV"), "dev"), "deploy env (env DEPLOY_ENV)")
	fs.StringVar(&cfg.zone, "zone", getenv("ZONE"), "zone (env ZONE; instances: only this zone; set, cancel: the instance's zone)")
	fs.StringVar(&token, "token", "", "admin token (env DISCOVERY_ADMIN_TOKEN; or --token-file)")
	fs.StringVar(&tokenFile, "token-file", getenv("DISCOVERY_ADMIN_TOKEN_FILE"), "file holding the admin token (env DISCOVERY_ADMIN_TOKEN_FILE)")
	fs.StringVar(&cfg.caFile, "ca-file", getenv("DISCOVERY_CA_FILE"), "PEM CA of the nodes' HTTPS certificates: talk HTTPS to their http.tls listener (env DISCOVERY_CA_FILE)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "time limit of one request to one node")
	fs.StringVarP(&output, "output", "o", "table", "table or json")
	fs.BoolVar(&jsonOut, "json", false, "same as -o json")
	var so subOpts
	if sc.flags != nil {
		sc.flags(fs, &so)
	}
	fs.Usage = func() { subUsage(stderr, sc, fs) }
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "discovery ctl %s: %v\nRun 'discovery ctl %s --help'.\n", sc.name, err, sc.name)
		return ExitUsage
	}
	if fs.NArg() != sc.nargs {
		fmt.Fprintf(stderr, "discovery ctl %s: want %s\nRun 'discovery ctl %s --help'.\n", sc.name, or(sc.args, "no argument"), sc.name)
		return ExitUsage
	}
	switch output {
	case "table":
	case "json":
		jsonOut = true
	default:
		fmt.Fprintf(stderr, "discovery ctl %s: -o %q: want table or json\n", sc.name, output)
		return ExitUsage
	}
	if token == "" {
		token = getenv("DISCOVERY_ADMIN_TOKEN")
	}
	if token == "" && tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "discovery ctl: --token-file: %v\n", err)
			return ExitUsage
		}
		token = strings.TrimSpace(string(b))
	}
	cfg.token = token
	for _, n := range strings.Split(nodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.nodes = append(cfg.nodes, n)
		}
	}
	if len(cfg.nodes) == 0 {
		fmt.Fprintln(stderr, "discovery ctl: no node: give --nodes host:port or DISCOVERY_NODES")
		return ExitUsage
	}
	c, err := newClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "discovery ctl: %v\n", err)
		return exitCode(err)
	}
	defer c.close()
	r := &runner{c: c, cfg: cfg, json: jsonOut, stdout: stdout, opts: so}
	if err := sc.run(ctx, r, fs.Args()); err != nil {
		if errors.Is(err, context.Canceled) {
			return ExitOK // interrupted (watch)
		}
		fmt.Fprintf(stderr, "discovery ctl %s: %v\n", sc.name, err)
		return exitCode(err)
	}
	return ExitOK
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: discovery ctl COMMAND [flags]")
	fmt.Fprintln(w, "\nCommands:")
	for _, s := range subcommands() {
		fmt.Fprintf(w, "  %-10s %s\n", s.name, s.summary)
	}
	fmt.Fprintln(w, "\nEvery command takes --nodes (or DISCOVERY_NODES), --env, --zone, --token (or DISCOVERY_ADMIN_TOKEN,")
	fmt.Fprintln(w, "--token-file), --ca-file, --timeout and -o json. 'discovery ctl COMMAND --help' shows examples.")
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 failure, 2 usage (or -400), 3 not found (-404), 4 refused (-401/-403),")
	fmt.Fprintln(w, "5 no node reachable.")
}

func subUsage(w io.Writer, sc *subcommand, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: discovery ctl %s %s[flags]\n\n%s.\n\nExamples:\n", sc.name, strings.TrimLeft(sc.args+" ", " "), sc.summary)
	for _, e := range sc.examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 failure, 2 usage (or -400), 3 not found (-404), 4 refused (-401/-403), 5 no node reachable.")
}

// out writes v as indented JSON, or the table when not json.
func (r *runner) out(v any, table func(w *tabwriter.Writer)) error {
	if r.json {
		enc := json.NewEncoder(r.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func row(w io.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}

func statusName(s uint32) string {
	switch s {
	case 1:
		return "UP"
	case 2:
		return "WAITING"
	}
	return strconv.FormatUint(uint64(s), 10)
}

// age formats a duration for people: 4s, 3m12s, 2h5m, 3d4h.
func age(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func metaText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return or(strings.Join(parts, ","), "-")
}

func appsCmd(ctx context.Context, r *runner, _ []string) error {
	var page wire.AppsPage
	q := url.Values{"env": {r.cfg.env}, "limit": {strconv.Itoa(r.opts.limit)}}
	if r.cfg.zone != "" {
		q.Set("zone", r.cfg.zone)
	}
	if r.opts.status != "" {
		q.Set("status", r.opts.status)
	}
	if r.opts.prefix != "" {
		q.Set("prefix", r.opts.prefix)
	}
	if _, err := r.c.data(ctx, http.MethodGet, wire.PathAdminApps, q, &page); err != nil {
		return err
	}
	return r.out(page, func(w *tabwriter.Writer) {
		row(w, "ENV", "APPID", "INSTANCES", "UP", "WAITING", "STALE", "ZONES")
		for _, a := range page.Apps {
			zones := make([]string, 0, len(a.Zones))
			for z := range a.Zones {
				zones = append(zones, z)
			}
			sort.Strings(zones)
			for i, z := range zones {
				zones[i] = fmt.Sprintf("%s:%d", z, a.Zones[z].Up+a.Zones[z].Waiting)
			}
			row(w, a.Env, a.AppID, a.Instances, a.Up, a.Waiting, a.Stale, strings.Join(zones, ","))
		}
		if page.Total > len(page.Apps) {
			row(w, fmt.Sprintf("(%d of %d apps; --limit for more)", len(page.Apps), page.Total))
		}
	})
}

// fetchApp returns the app's instances through the public fetch (both
// statuses; the zone filter when given).
func (r *runner) fetchApp(ctx context.Context, appid string) ([]wire.Instance, error) {
	q := url.Values{"env": {r.cfg.env}, "appid": {appid}, "status": {"3"}}
	if r.cfg.zone != "" {
		q.Set("zone", r.cfg.zone)
	}
	var info wire.InstanceInfo
	if _, err := r.c.data(ctx, http.MethodGet, "/discovery/fetch", q, &info); err != nil {
		return nil, err
	}
	var out []wire.Instance
	for _, l := range info.Instances {
		for _, in := range l {
			out = append(out, *in)
		}
	}
	slices.SortFunc(out, func(a, b wire.Instance) int {
		if c := strings.Compare(a.Zone, b.Zone); c != 0 {
			return c
		}
		return strings.Compare(a.Hostname, b.Hostname)
	})
	return out, nil
}

func instancesCmd(ctx context.Context, r *runner, args []string) error {
	list, err := r.fetchApp(ctx, args[0])
	if err != nil {
		return err
	}
	if list == nil {
		list = []wire.Instance{}
	}
	now := time.Now()
	return r.out(list, func(w *tabwriter.Writer) {
		row(w, "HOSTNAME", "ZONE", "STATUS", "ADDRS", "VERSION", "LAST RENEW", "METADATA")
		for _, in := range list {
			row(w, in.Hostname, in.Zone, statusName(in.Status), strings.Join(in.Addrs, ","), or(in.Version, "-"),
				age(now.Sub(time.Unix(0, in.RenewTimestamp)))+" ago", metaText(in.Metadata))
		}
	})
}

func nodesCmd(ctx context.Context, r *runner, _ []string) error {
	var nodes []wire.Node
	if _, err := r.c.data(ctx, http.MethodGet, "/discovery/nodes", nil, &nodes); err != nil {
		return err
	}
	slices.SortFunc(nodes, func(a, b wire.Node) int { return strings.Compare(a.Addr, b.Addr) })
	return r.out(nodes, func(w *tabwriter.Writer) {
		row(w, "ADDR", "ZONE", "STATUS")
		for _, n := range nodes {
			st := "UP"
			if n.Status != wire.NodeUp {
				st = "LOST"
			}
			row(w, n.Addr, n.Zone, st)
		}
	})
}

func statusCmd(ctx context.Context, r *runner, _ []string) error {
	var st wire.AdminStatus
	node, err := r.c.data(ctx, http.MethodGet, wire.PathAdminStatus, nil, &st)
	if err != nil {
		return err
	}
	if r.json {
		return r.out(st, nil)
	}
	w := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	n, g := st.Node, st.Registry
	ready := "READY"
	if !n.Ready {
		ready = "NOT READY"
	}
	row(w, "Node", fmt.Sprintf("%s (%s) at %s, %s/%s/%s, version %s, up %s, %s", n.Hostname, n.Name, node, n.Env, n.Zone, n.Region, or(n.Version, "-"),
		age(time.Duration(n.UptimeSeconds*float64(time.Second))), ready))
	prot := "off"
	if g.Protected {
		prot = "ON (evictions held back)"
	}
	row(w, "Self-preservation", fmt.Sprintf("%s: %d renews last minute, expected %d, threshold %d; %d evictions", prot, g.RenewsLastMinute, g.ExpectedRenews, g.RenewThreshold, g.Evictions))
	envs := make([]string, 0, len(g.Instances))
	for e := range g.Instances {
		envs = append(envs, e)
	}
	sort.Strings(envs)
	parts := make([]string, len(envs))
	for i, e := range envs {
		parts[i] = fmt.Sprintf("%s: %d apps, %d instances", e, g.Apps[e], g.Instances[e])
	}
	row(w, "Registry", or(strings.Join(parts, "; "), "empty")+fmt.Sprintf("; %d tombstones", g.Tombstones))
	row(w, "Clients", fmt.Sprintf("%d parked polls of %d; %d connections of %d", st.Polls.Parked, st.Polls.Max, st.Connections.Open, st.Connections.Max))
	row(w, "Anti-entropy", fmt.Sprintf("%d repairs; %d rounds ok, %d failed", st.AntiEntropy.Repairs, st.AntiEntropy.RoundsOK, st.AntiEntropy.RoundsFailed))
	fmt.Fprintln(w)
	row(w, "MEMBER", "ADDR", "ZONE", "STATE")
	for _, m := range st.Members {
		name := m.Name
		if m.Self {
			name += " (this node)"
		}
		row(w, name, m.Addr, m.Zone, m.State)
	}
	if len(st.Replication) > 0 {
		fmt.Fprintln(w)
		row(w, "LINK", "KIND", "ADDR", "QUEUE", "STATE", "ACKED", "FAILED", "LAST LAG")
		for _, p := range st.Replication {
			state := "ok"
			if p.Failing {
				state = "failing"
			}
			row(w, p.Name, p.Kind, p.Addr, p.Queue, state, p.Acked, p.Failed, fmt.Sprintf("%.2fms", p.LagMs))
		}
	}
	if len(st.Legacy) > 0 {
		fmt.Fprintln(w)
		row(w, "LEGACY NODE", "ZONE", "STATE", "LAST PULL", "FORWARDED", "FAILED", "RECEIVED", "REPAIRED", "LAST ERROR")
		for _, l := range st.Legacy {
			state, pull := "down", "never"
			if l.Up {
				state = "up"
			}
			if l.LastPull > 0 {
				pull = age(time.Since(time.Unix(0, l.LastPull))) + " ago"
			}
			row(w, l.Addr, or(l.Zone, n.Zone), state, pull, l.Forwarded, l.Failed, l.Received, l.Repaired, or(l.LastError, "-"))
		}
	}
	return w.Flush()
}

// zoneOf finds the zone of appid/hostname when --zone is not given: the
// one zone that holds it, else a usage error.
func (r *runner) zoneOf(ctx context.Context, appid, hostname string) (string, error) {
	if r.cfg.zone != "" {
		return r.cfg.zone, nil
	}
	list, err := r.fetchApp(ctx, appid)
	if err != nil {
		return "", err
	}
	var zones []string
	for _, in := range list {
		if in.Hostname == hostname && !slices.Contains(zones, in.Zone) {
			zones = append(zones, in.Zone)
		}
	}
	switch len(zones) {
	case 0:
		return "", &codeError{wire.CodeNotFound, "hostname " + hostname + " of " + appid + " not found in env " + r.cfg.env, "the cluster"}
	case 1:
		return zones[0], nil
	}
	return "", usagef("hostname %s is in zones %s: give --zone", hostname, strings.Join(zones, ", "))
}

type writeResult struct {
	Done     string `json:"done"`
	AppID    string `json:"appid"`
	Hostname string `json:"hostname"`
	Zone     string `json:"zone"`
	Env      string `json:"env"`
	Node     string `json:"node"`
}

func (r *runner) write(ctx context.Context, what, path string, form url.Values, appid, host, zone string) error {
	env, node, err := r.c.call(ctx, http.MethodPost, path, form)
	if err != nil {
		return err
	}
	if env.Code != wire.CodeOK {
		return &codeError{env.Code, env.Message, node}
	}
	res := writeResult{Done: what, AppID: appid, Hostname: host, Zone: zone, Env: r.cfg.env, Node: node}
	return r.out(res, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s: %s %s (env %s, zone %s) on %s; replicated to every node\n", what, appid, host, r.cfg.env, zone, node)
	})
}

func setCmd(ctx context.Context, r *runner, args []string) error {
	appid, host := args[0], args[1]
	form := url.Values{"env": {r.cfg.env}, "appid": {appid}, "hostname": {host}}
	var what []string
	switch strings.ToLower(r.opts.status) {
	case "":
	case "up", "1":
		form.Set("status", "1")
		what = append(what, "status UP")
	case "waiting", "2":
		form.Set("status", "2")
		what = append(what, "status WAITING")
	default:
		return usagef("--status %q: want up or waiting", r.opts.status)
	}
	if r.opts.metadata != "" {
		var m map[string]string
		if err := json.Unmarshal([]byte(r.opts.metadata), &m); err != nil || m == nil {
			return usagef("--metadata: want a JSON object of strings, e.g. '{\"weight\":\"5\"}'")
		}
		form.Set("metadata", r.opts.metadata)
		what = append(what, "metadata replaced")
	}
	if len(what) == 0 {
		return usagef("nothing to set: give --status and/or --metadata")
	}
	zone, err := r.zoneOf(ctx, appid, host)
	if err != nil {
		return err
	}
	form.Set("zone", zone)
	return r.write(ctx, "set "+strings.Join(what, ", "), "/discovery/set", form, appid, host, zone)
}

func cancelCmd(ctx context.Context, r *runner, args []string) error {
	appid, host := args[0], args[1]
	zone, err := r.zoneOf(ctx, appid, host)
	if err != nil {
		return err
	}
	form := url.Values{"env": {r.cfg.env}, "appid": {appid}, "hostname": {host}, "zone": {zone}}
	return r.write(ctx, "cancelled", "/discovery/cancel", form, appid, host, zone)
}

// watchCmd prints the instance list at start and at every change, through
// the SDK's long-poll (failover, node list from infra.discovery).
func watchCmd(ctx context.Context, r *runner, args []string) error {
	cfg := sdk.Config{Nodes: r.cfg.nodes, Env: r.cfg.env, Zone: or(r.cfg.zone, sdk.DefaultZone), Hostname: "discovery-ctl",
		Region: sdk.DefaultRegion, CAFile: r.cfg.caFile, RequestTimeout: r.cfg.timeout}
	dc, err := sdk.New(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	defer func() { _ = dc.Close() }()
	w, err := dc.Watch(args[0])
	if err != nil {
		return err
	}
	var last map[string]wire.Instance
	for {
		set, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return context.Canceled
			}
			if errors.Is(err, sdk.ErrClosed) {
				return nil
			}
			if errors.Is(err, sdk.ErrNotFound) {
				set = &sdk.Instances{}
			} else {
				continue // transient: the SDK fails over and retries
			}
		}
		cur := map[string]wire.Instance{}
		var all []wire.Instance
		for _, in := range set.All() {
			wi := in
			cur[in.Zone+"/"+in.Hostname] = wi
			all = append(all, wi)
		}
		if r.json {
			if err := json.NewEncoder(r.stdout).Encode(map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "appid": args[0], "instances": orEmpty(all)}); err != nil {
				return err
			}
			last = cur
			continue
		}
		fmt.Fprintf(r.stdout, "%s %s: %d instances%s\n", time.Now().UTC().Format(time.RFC3339), args[0], len(cur), diff(last, cur))
		last = cur
	}
}

func orEmpty(l []wire.Instance) []wire.Instance {
	if l == nil {
		return []wire.Instance{}
	}
	return l
}

// diff describes what changed from a to b: +added -removed ~changed.
func diff(a, b map[string]wire.Instance) string {
	if a == nil {
		keys := sortedKeys(b)
		if len(keys) == 0 {
			return ""
		}
		for i, k := range keys {
			keys[i] = k + " " + statusName(b[k].Status)
		}
		return ": " + strings.Join(keys, ", ")
	}
	var parts []string
	for _, k := range sortedKeys(b) {
		old, ok := a[k]
		switch {
		case !ok:
			parts = append(parts, "+"+k+" "+statusName(b[k].Status))
		case old.Status != b[k].Status:
			parts = append(parts, "~"+k+" "+statusName(old.Status)+"->"+statusName(b[k].Status))
		case !slices.Equal(old.Addrs, b[k].Addrs) || metaText(old.Metadata) != metaText(b[k].Metadata) || old.Version != b[k].Version:
			parts = append(parts, "~"+k+" changed")
		}
	}
	for _, k := range sortedKeys(a) {
		if _, ok := b[k]; !ok {
			parts = append(parts, "-"+k)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

func sortedKeys(m map[string]wire.Instance) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type nodeHealth struct {
	Addr  string `json:"addr"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// healthCmd checks /readyz of every node: the seeds and what they list.
func healthCmd(ctx context.Context, r *runner, _ []string) error {
	// Learn the node list (any node that answers lists the others).
	_, _, _ = r.c.call(ctx, http.MethodGet, "/discovery/nodes", nil)
	var out []nodeHealth
	ready, reached := 0, 0
	for _, n := range r.c.nodes {
		ok, err := r.c.readyz(ctx, n)
		h := nodeHealth{Addr: n, Ready: ok}
		if err != nil {
			h.Error = err.Error()
		} else {
			reached++
		}
		if ok {
			ready++
		}
		out = append(out, h)
	}
	if err := r.out(out, func(w *tabwriter.Writer) {
		row(w, "NODE", "READY", "ERROR")
		for _, h := range out {
			row(w, h.Addr, h.Ready, or(h.Error, "-"))
		}
	}); err != nil {
		return err
	}
	switch {
	case reached == 0:
		return &unreachableError{}
	case ready < len(out):
		return fmt.Errorf("%d of %d nodes ready", ready, len(out))
	}
	return nil
}
