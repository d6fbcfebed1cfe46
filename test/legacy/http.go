package legacy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// reply is one answer of a protocol route.
type reply struct {
	empty   bool // D5: register with status > 2 writes nothing at all
	code    int
	msg     string // "" means the decimal code
	data    any
	hasData bool           // kratos omits data only when the handler passed a nil interface
	mapped  map[string]any // the map shape (polls, poll-404): no ttl
}

func replyCode(code int) reply { return reply{code: code} }

func replyData(code int, data any) reply { return reply{code: code, data: data, hasData: true} }

func badRequest(msg string) reply { return reply{code: codeRequestErr, msg: msg} }

// stdBody is kratos' render.JSON.
type stdBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	TTL     int    `json:"ttl"`
	Data    any    `json:"data,omitempty"`
}

func writeReply(w http.ResponseWriter, rp reply) {
	if rp.empty {
		w.WriteHeader(http.StatusOK)
		return
	}
	msg := rp.msg
	if msg == "" {
		msg = strconv.Itoa(rp.code)
	}
	var body []byte
	var err error
	if rp.mapped != nil {
		m := rp.mapped
		m["code"] = rp.code
		if _, ok := m["message"]; !ok {
			m["message"] = msg
		}
		body, err = json.Marshal(m)
	} else {
		sb := stdBody{Code: rp.code, Message: msg, TTL: 1}
		if rp.hasData {
			sb.Data = rp.data
			if sb.Data == nil {
				sb.Data = json.RawMessage("null")
			}
		}
		body, err = json.Marshal(sb)
	}
	if err != nil {
		// Cannot happen with these types; answer like a server error anyway.
		body = []byte(`{"code":-500,"message":"-500","ttl":1}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Kratos-Status-Code", strconv.Itoa(rp.code))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	write := func(f func(context.Context, url.Values) reply) http.HandlerFunc {
		return n.handle(false, func(ctx context.Context, _ *http.Request, v url.Values) reply { return f(ctx, v) })
	}
	read := func(f func(context.Context, *http.Request, url.Values) reply) http.HandlerFunc {
		return n.handle(true, f)
	}
	mux.HandleFunc("POST /discovery/register", write(n.doRegister))
	mux.HandleFunc("POST /discovery/renew", write(n.doRenew))
	mux.HandleFunc("POST /discovery/cancel", write(n.doCancel))
	mux.HandleFunc("POST /discovery/set", write(n.doSet))
	mux.HandleFunc("GET /discovery/fetch/all", read(n.doFetchAll))
	mux.HandleFunc("GET /discovery/fetch", read(n.doFetch))
	mux.HandleFunc("GET /discovery/fetchs", read(n.doFetchs))
	mux.HandleFunc("GET /discovery/poll", read(n.doPoll))
	mux.HandleFunc("GET /discovery/polls", read(n.doPolls))
	mux.HandleFunc("GET /discovery/nodes", read(n.doNodes))
	return mux
}

// handle parses the parameters the way the original does, applies the
// init-protect gate to reads and derives the request deadline from
// x1-bmspy-timeout (header minus 20 ms, as kratos blademaster does).
func (n *Node) handle(gated bool, f func(context.Context, *http.Request, url.Values) reply) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !n.enter() {
			return
		}
		defer n.exit()
		if gated && n.protected.Load() {
			writeReply(w, replyCode(codeServerErr)) // D8: HTTP 200, code -500
			return
		}
		if err := r.ParseForm(); err != nil {
			writeReply(w, badRequest(err.Error()))
			return
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			_ = r.ParseMultipartForm(32 << 20)
		}
		// The original's request context is not tied to the connection, so a
		// forward outlives a client that hangs up; only Kill cuts it short.
		ctx := n.baseCtx
		if to := headerTimeout(r); to > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, to)
			defer cancel()
		}
		writeReply(w, f(ctx, r, r.Form))
	}
}

func headerTimeout(r *http.Request) time.Duration {
	ms, err := strconv.ParseInt(r.Header.Get("x1-bmspy-timeout"), 10, 64)
	if err != nil {
		return 0
	}
	if ms > 20 {
		ms -= 20
	}
	return time.Duration(ms) * time.Millisecond
}

func (n *Node) doRegister(ctx context.Context, v url.Values) reply {
	b := newBinder(v, "ArgRegister")
	region, zone, env, appid, hostname := b.str("region"), b.str("zone"), b.str("env"), b.str("appid"), b.str("hostname")
	status := b.u32("status")
	addrs := b.strs("addrs")
	version, metadata := b.str("version"), b.str("metadata")
	replication := b.boolean("replication")
	_ = b.i64("latest_timestamp") // only feeds a counter clients never see
	dirty := b.i64("dirty_timestamp")
	fromZone := b.boolean("from_zone")
	if b.err == nil {
		b.requireStr("Zone", zone)
		b.requireStr("Env", env)
		b.requireStr("AppID", appid)
		b.requireStr("Hostname", hostname)
		b.requireNum("Status", status)
		b.requireList("Addrs", len(addrs))
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	now := nowNano()
	ins := &Instance{
		Region: region, Zone: zone, Env: env, AppID: appid, Hostname: hostname, Addrs: addrs, Version: version,
		Status: status, RegTimestamp: now, UpTimestamp: now, RenewTimestamp: now, DirtyTimestamp: now, LatestTimestamp: now,
	}
	if metadata != "" {
		// D6: decode errors (e.g. {"weight":10}) are ignored, mistyped values
		// end up "".
		_ = json.Unmarshal([]byte(metadata), &ins.Metadata)
	}
	if status > 2 {
		return reply{empty: true} // D5
	}
	if metadata != "" && !json.Valid([]byte(metadata)) {
		return replyCode(codeRequestErr)
	}
	if dirty > 0 {
		ins.DirtyTimestamp = dirty
	}
	fwd := ins.plainCopy()
	n.reg.register(ins)
	if !replication {
		n.replicate(ctx, actRegister, fwd, fromZone)
	}
	return replyCode(codeOK)
}

func (n *Node) doRenew(ctx context.Context, v url.Values) reply {
	b := newBinder(v, "ArgRenew")
	zone, env, appid, hostname := b.str("zone"), b.str("env"), b.str("appid"), b.str("hostname")
	replication := b.boolean("replication")
	dirty := b.i64("dirty_timestamp")
	_ = b.boolean("from_zone")
	if b.err == nil {
		b.requireStr("Zone", zone)
		b.requireStr("Env", env)
		b.requireStr("AppID", appid)
		b.requireStr("Hostname", hostname)
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	ins, ok, zoneKnown := n.reg.renew(env, appid, zone, hostname)
	if !ok {
		if !zoneKnown {
			return replyData(codeNothing, (*Instance)(nil))
		}
		return replyData(codeNothing, ins) // the original's zero-valued instance
	}
	if !replication {
		n.replicate(ctx, actRenew, ins, zone != n.cfg.Zone)
		return replyData(codeOK, ins)
	}
	switch {
	case dirty > ins.DirtyTimestamp:
		return replyData(codeNothing, ins)
	case dirty < ins.DirtyTimestamp:
		return replyData(codeConflict, ins)
	}
	return replyData(codeOK, ins)
}

func (n *Node) doCancel(ctx context.Context, v url.Values) reply {
	b := newBinder(v, "ArgCancel")
	zone, env, appid, hostname := b.str("zone"), b.str("env"), b.str("appid"), b.str("hostname")
	_ = b.boolean("from_zone")
	replication := b.boolean("replication")
	latest := b.i64("latest_timestamp")
	if b.err == nil {
		b.requireStr("Zone", zone)
		b.requireStr("Env", env)
		b.requireStr("AppID", appid)
		b.requireStr("Hostname", hostname)
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	ins, ok := n.reg.cancel(env, appid, zone, hostname, latest)
	if !ok {
		return replyCode(codeNothing)
	}
	n.reg.decrExp()
	if !replication {
		n.replicate(ctx, actCancel, ins, zone != n.cfg.Zone)
	}
	return replyCode(codeOK)
}

func (n *Node) doSet(ctx context.Context, v url.Values) reply {
	b := newBinder(v, "ArgSet")
	arg := &setArgs{region: b.str("region"), zone: b.str("zone"), env: b.str("env"), appid: b.str("appid")}
	arg.hostnames = b.strs("hostname")
	arg.statuses = b.i64s("status")
	arg.metadata = b.strs("metadata")
	replication := b.boolean("replication")
	fromZone := b.boolean("from_zone")
	arg.setTimestamp = b.i64("set_timestamp")
	if b.err == nil {
		b.requireStr("Zone", arg.zone)
		b.requireStr("Env", arg.env)
		b.requireStr("AppID", arg.appid)
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	if (len(arg.statuses) != 0 && len(arg.statuses) != len(arg.hostnames)) ||
		(len(arg.metadata) != 0 && len(arg.metadata) != len(arg.hostnames)) {
		return replyCode(codeRequestErr)
	}
	if arg.setTimestamp == 0 {
		arg.setTimestamp = nowNano()
	}
	code := codeOK
	if !n.reg.set(arg) {
		code = codeRequestErr
	}
	if !replication {
		n.replicateSet(ctx, arg, fromZone) // D7: even when it failed here
	}
	return replyCode(code)
}

func (n *Node) doFetchAll(context.Context, *http.Request, url.Values) reply {
	return replyData(codeOK, n.reg.fetchAll())
}

func (n *Node) doFetch(_ context.Context, _ *http.Request, v url.Values) reply {
	b := newBinder(v, "ArgFetch")
	zone, env, appid := b.str("zone"), b.str("env"), b.str("appid")
	status := b.u32("status")
	if b.err == nil {
		b.requireStr("Env", env)
		b.requireStr("AppID", appid)
		b.requireNum("Status", status)
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	info, code := n.reg.fetch(zone, env, appid, 0, status)
	return replyData(code, info)
}

func (n *Node) doFetchs(_ context.Context, _ *http.Request, v url.Values) reply {
	b := newBinder(v, "ArgFetchs")
	zone, env := b.str("zone"), b.str("env")
	appids := b.strs("appid")
	status := b.u32("status")
	if b.err == nil {
		b.requireStr("Env", env)
		b.requireList("AppID", len(appids))
		b.requireNum("Status", status)
	}
	if p := b.problem(); p != "" {
		return badRequest(p)
	}
	out := map[string]*InstanceInfo{}
	for _, id := range appids {
		if info, code := n.reg.fetch(zone, env, id, 0, status); code == codeOK {
			out[id] = info
		}
	}
	return replyData(codeOK, out)
}

type pollArgs struct {
	zone, env, hostname string
	appids              []string
	latests             []int64
}

func bindPolls(v url.Values) (pollArgs, string) {
	b := newBinder(v, "ArgPolls")
	a := pollArgs{zone: b.str("zone"), env: b.str("env")}
	a.appids = b.strs("appid")
	a.hostname = b.str("hostname")
	a.latests = b.i64s("latest_timestamp")
	if b.err == nil {
		b.requireStr("Env", a.env)
		b.requireList("AppID", len(a.appids))
		b.requireStr("Hostname", a.hostname)
	}
	return a, b.problem()
}

// hold waits for a wake-up of w: at most PollHold, less when the request
// deadline is earlier; nil means -304. Unlike the original (D14), a client
// that hangs up releases its waiter at once.
func (n *Node) hold(ctx context.Context, r *http.Request, w *waiter) map[string]*InstanceInfo {
	defer n.reg.unwait(w)
	t := time.NewTimer(n.cfg.PollHold)
	defer t.Stop()
	select {
	case m := <-w.ch:
		return m
	case <-t.C:
	case <-ctx.Done():
	case <-r.Context().Done():
	case <-n.drain:
	}
	return nil
}

func (n *Node) doPolls(ctx context.Context, r *http.Request, v url.Values) reply {
	a, p := bindPolls(v)
	if p != "" {
		return badRequest(p)
	}
	if len(a.appids) != len(a.latests) {
		return replyCode(codeRequestErr)
	}
	changed, miss, w := n.reg.polls(a.env, a.zone, a.appids, a.latests)
	if w != nil {
		if changed = n.hold(ctx, r, w); changed == nil {
			return replyCode(codeNotModified)
		}
	}
	return reply{code: codeOK, mapped: map[string]any{"data": changed, "error": map[string]any{"-404": miss}}}
}

// doPoll watches only the first appid (the spec's reading; the original's
// answer for other appids would be D15).
func (n *Node) doPoll(ctx context.Context, r *http.Request, v url.Values) reply {
	a, p := bindPolls(v)
	if p != "" {
		return badRequest(p)
	}
	id := a.appids[0]
	var latest int64
	if len(a.latests) == len(a.appids) {
		latest = a.latests[0]
	}
	changed, miss, w := n.reg.polls(a.env, a.zone, []string{id}, []int64{latest})
	if len(miss) > 0 {
		if w != nil {
			n.reg.unwait(w)
		}
		return reply{code: codeNothing, mapped: map[string]any{"message": id + " not found"}}
	}
	if w != nil {
		if changed = n.hold(ctx, r, w); changed == nil {
			return replyCode(codeNotModified)
		}
	}
	return replyData(codeOK, changed[id])
}

func (n *Node) doNodes(context.Context, *http.Request, url.Values) reply {
	ps := n.peers.Load()
	out := make([]NodeInfo, 0, len(ps.same))
	for _, p := range ps.same {
		out = append(out, NodeInfo{Addr: p.addr, Status: int(p.status.Load()), Zone: p.zone})
	}
	return replyData(codeOK, out)
}
