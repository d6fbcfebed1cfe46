package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// Replicator forwards writes this node accepted from a client (replication
// = false) to its peers. Implemented by syncup.Cluster. Calls never block:
// the request is answered without waiting for peers (spec 7.2.2).
// fromZone is the request's from_zone flag: true means the write came from
// another zone and must be forwarded only inside this node's zone.
// Register takes ins over (the stored copy RegisterFrom made for the
// caller): the caller does not touch it afterwards. Renew gets the key and
// the stored dirty_timestamp, all a forwarded renew carries.
type Replicator interface {
	Register(ins registry.Instance, fromZone bool)
	Renew(k registry.Key, dirty int64, fromZone bool)
	Cancel(t registry.Tombstone, fromZone bool)
	Set(req registry.SetRequest, fromZone bool)
}

// forwardChecker is an optional capability of a Replicator: whether a
// register accepted now would reach any peer. With it a node that has no
// peer (the single node, or every peer gone) builds no stored copy only
// to drop it: 2 allocations and about 1 µs of a register.
type forwardChecker interface {
	Forwards(fromZone bool) bool
}

// Deps are the collaborators of the HTTP layer. Only Registry is required.
type Deps struct {
	Registry *registry.Registry
	// Replicator nil: standalone node, nothing is forwarded.
	Replicator Replicator
	// Nodes lists live same-zone nodes including self; nil: Self only.
	Nodes func() []wire.Node
	// Ready reports whether init-protect / startup sync has ended; nil:
	// always ready. While false, read-gated routes answer -503 and /readyz 503.
	Ready func() bool
	// Internal, if set, is mounted at /discovery/internal/ (peer protocol).
	Internal http.Handler
	// Peers tells requests of the cluster's nodes apart (peer-only
	// parameters, fetch/all); nil: no request comes from a peer.
	Peers PeerCheck
	// Legacy recognises the nodes of an original bilibili/discovery
	// cluster this node runs beside (a migration); nil: none.
	Legacy LegacyCheck
	// Security is what the API enforces beyond the protocol.
	Security SecurityConfig
	// Self is this node (addr = advertised HTTP host:port, zone).
	Self wire.Node
	// Node describes this node for the admin status (hostname, env,
	// version, start time, ...); Cluster, if set, adds the cluster layer's
	// part (members, replication links, anti-entropy, legacy nodes).
	Node    wire.NodeStatus
	Cluster func() wire.ClusterStatus
	Logger  *slog.Logger
	// Metrics receives the HTTP and registry metrics; Gatherer serves
	// /metrics. Usually the same *prometheus.Registry. Both nil: a private
	// registry is used for both.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
}

// Route paths (spec 2.1, 10.2, 10.3).
const (
	pathRegister = "/discovery/register"
	pathRenew    = "/discovery/renew"
	pathCancel   = "/discovery/cancel"
	pathSet      = "/discovery/set"
	pathFetchAll = "/discovery/fetch/all"
	pathFetch    = "/discovery/fetch"
	pathFetchs   = "/discovery/fetchs"
	pathPoll     = "/discovery/poll"
	pathPolls    = "/discovery/polls"
	pathNodes    = "/discovery/nodes"
	pathTargets  = "/discovery/prometheus/targets"
	pathUI       = "/ui/"
	pathInternal = "/discovery/internal/*"
	pathMetrics  = "/metrics"
	pathHealthz  = "/healthz"
	pathReadyz   = "/readyz"
)

// Server is the discovery HTTP API. All methods are safe for concurrent use.
type Server struct {
	cfg      Config
	reg      *registry.Registry
	repl     Replicator
	fwd      forwardChecker // repl's capability; nil: every write may be forwarded
	nodes    func() []wire.Node
	ready    func() bool
	self     wire.Node
	log      *slog.Logger
	e        *echo.Echo
	srv      *http.Server
	m        *metrics
	gatherer prometheus.Gatherer
	guard    *guard
	node     wire.NodeStatus
	cluster  func() wire.ClusterStatus
	// holderClient asks other nodes which copies they hold (admin app view).
	holderClient *http.Client
	// fetchAllSem bounds the fetch/all answers streamed at once: each
	// walks the whole registry.
	fetchAllSem chan struct{}

	// pollCtx ends at Shutdown: every parked poll answers -304 at once.
	pollCtx  context.Context
	pollStop context.CancelFunc
	// baseCtx is the parent of every request context; it ends after the
	// graceful drain so nothing outlives the server.
	baseCtx  context.Context
	baseStop context.CancelFunc

	parked atomic.Int64 // polls currently held

	// Connection caps, derived at New from the configuration and the
	// open-file limit, shared by the plain and the HTTPS listener.
	maxConns, maxPollers int
	caps                 *connCaps
	connRefused          *prometheus.CounterVec
	// tls serves the HTTPS listener (nil: http.tls.addr unset).
	tls *certReloader
	// reentry is the plain listener Serve serves, which lean polls give
	// their connections back to; leanWG counts the goroutines of lean
	// connections and their workers. A new lean connection is counted
	// only through leanAdd: once Shutdown or Close waits (leanDone), none
	// starts; later goroutines are added by counted ones.
	reentry    atomic.Pointer[reentryListener]
	leanWG     sync.WaitGroup
	leanMu     sync.Mutex
	leanDone   bool
	leanConns  *leanPoll     // lean connections not let go yet (leanLink), guarded by leanMu
	leanTasks  chan leanTask // to an idle worker of lean connections (unbuffered)
	leanTotal  atomic.Int64  // polls parked lean since start
	leanWrites atomic.Int64  // writes served by lean connections since start
	closed     atomic.Bool   // Close was called: lean connections stop reading bodies
	// answerBufs: buffers (*[]byte) in which multi-part answers are joined
	// before their write (writeJoined, lean polls): a wake of 10 000 polls
	// writes 10 000 at once.
	answerBufs  sync.Pool
	writeStates sync.Pool // *leanWriteState: a lean write's request, header and form maps
	date        httpDate  // the Date header of lean answers

	// newConns are connections that have not sent a request yet
	// (StateNew). Shutdown closes them itself: net/http's Shutdown leaves
	// such a connection (e.g. a peer's spare keep-alive dial) open for 5 s.
	connMu   sync.Mutex
	newConns map[net.Conn]struct{}
}

// New builds the HTTP API (echo v4) and registers its metrics.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if deps.Registry == nil {
		return nil, errors.New("api: Deps.Registry is required")
	}
	s := &Server{
		cfg:   cfg,
		reg:   deps.Registry,
		repl:  deps.Replicator,
		nodes: deps.Nodes,
		ready: deps.Ready,
		self:  deps.Self,
		log:   deps.Logger,
		node:  deps.Node,

		cluster:      deps.Cluster,
		holderClient: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}},
	}
	s.fwd, _ = deps.Replicator.(forwardChecker)
	if s.node.Addr == "" {
		s.node.Addr = deps.Self.Addr
	}
	if s.node.Zone == "" {
		s.node.Zone = deps.Self.Zone
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ready == nil {
		s.ready = func() bool { return true }
	}
	regr, gath := deps.Metrics, deps.Gatherer
	if regr == nil && gath == nil {
		pr := prometheus.NewRegistry()
		regr, gath = pr, pr
	}
	if regr == nil {
		regr = prometheus.NewRegistry() // metrics go nowhere visible
	}
	if gath == nil {
		gath = prometheus.Gatherers{}
	}
	s.gatherer = gath
	if err := deps.Security.Validate(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	g, err := newGuard(deps.Security, deps.Peers, deps.Legacy, s.log)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.guard = g
	s.fetchAllSem = make(chan struct{}, 2)
	fds := fdLimit()
	s.maxConns, s.maxPollers = cfg.connLimits(fds)
	s.log.Info("connection limits", "fd_limit", fds, "max_conns", s.maxConns, "max_conns_per_ip", cfg.MaxConnsPerIP, "max_pollers", s.maxPollers)
	s.connRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "discovery_http_conn_refusals_total",
		Help: "Connections refused at accept by http.max_conns (global) or http.max_conns_per_ip (per_ip).",
	}, []string{"reason"})
	s.caps = newConnCaps(s.maxConns, cfg.MaxConnsPerIP, s.connRefused)
	if cfg.TLS.Addr != "" {
		if s.tls, err = newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, s.log); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		if err := s.tls.register(regr); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	m, err := newMetrics(regr, s.reg, s.parked.Load)
	if err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	for _, c := range []prometheus.Collector{g.refusals, s.connRefused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "discovery_http_connections", Help: "HTTP connections open now."},
			func() float64 { return float64(s.caps.open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "discovery_http_max_conns", Help: "The connection cap in force (http.max_conns, or derived from the open-file limit)."},
			func() float64 { return float64(s.maxConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "discovery_http_max_pollers", Help: "The parked-poll cap in force (http.max_pollers, or derived)."},
			func() float64 { return float64(s.maxPollers) }),
	} {
		if err := regr.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	s.m = m
	s.pollCtx, s.pollStop = context.WithCancel(context.Background())
	s.leanTasks = make(chan leanTask)
	s.baseCtx, s.baseStop = context.WithCancel(context.Background())
	s.e = s.buildEcho(deps.Internal)
	s.srv = &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		// Longer than the longest poll hold, so a held poll can always write
		// its -304; non-poll requests are bounded separately (boundRequest).
		WriteTimeout: cfg.PollHold + cfg.RequestTimeout,
		BaseContext:  func(net.Listener) context.Context { return s.baseCtx },
		ConnState:    s.connState,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.newConns = make(map[net.Conn]struct{})
	return s, nil
}

func (s *Server) buildEcho(internal http.Handler) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Clients connect directly; never trust X-Forwarded-For.
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError

	// One middleware for every request (echo re-applies e.Use middleware
	// per request, so each one costs a closure): recover, error rendering,
	// metrics and the Debug access log, then the OPTIONS rule.
	e.Use(s.instrument)

	// Route middleware is composed here once; echo would re-compose middleware
	// passed to e.GET/e.POST on every request.
	gated := s.readGate
	bounded := s.boundRequest

	e.POST(pathRegister, bounded(s.register))
	e.POST(pathRenew, bounded(s.renew))
	e.POST(pathCancel, bounded(s.cancel))
	e.POST(pathSet, bounded(s.set))
	e.GET(pathFetchAll, bounded(gated(s.fetchAll)))
	e.GET(pathFetch, bounded(gated(s.fetch)))
	e.GET(pathFetchs, bounded(gated(s.fetchs)))
	e.GET(pathNodes, bounded(gated(s.nodesHandler)))
	// Long polls are bounded by their own hold, not RequestTimeout.
	e.GET(pathPoll, gated(s.poll))
	e.GET(pathPolls, gated(s.polls))
	e.GET(pathTargets, bounded(s.targets))

	admin := s.adminGuard
	e.GET(wire.PathAdminStatus, bounded(admin(s.adminStatus)))
	e.GET(wire.PathAdminApps, bounded(admin(s.adminApps)))
	e.GET(wire.PathAdminApp, bounded(admin(s.adminApp)))
	e.GET(wire.PathAdminChanges, admin(s.adminChanges)) // held like a poll
	e.GET(pathUI+"*", s.ui)
	e.GET("/ui", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, pathUI) })

	e.GET(pathMetrics, echo.WrapHandler(promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	})))
	e.GET(pathHealthz, func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET(pathReadyz, func(c echo.Context) error {
		if !s.ready() {
			return c.String(http.StatusServiceUnavailable, "not ready\n")
		}
		return c.String(http.StatusOK, "ready\n")
	})
	if internal != nil {
		// Bounded like any request: a slow body cannot hold a peer slot.
		e.Any(pathInternal, bounded(s.internalRoute(internal)))
	}
	return e
}

// internalRoute serves the peer protocol and counts its refusals (the
// peer handler names them in a header) with the others.
func (s *Server) internalRoute(h http.Handler) echo.HandlerFunc {
	inner := echo.WrapHandler(h)
	return func(c echo.Context) error {
		err := inner(c)
		if reason := c.Response().Header().Get(peerRefusedHeader); reason != "" {
			s.guard.refused(c, reason, "peer request refused")
		}
		return err
	}
}

// peerRefusedHeader is syncup.RefusedHeader (not imported: api does not
// depend on the cluster layer).
const peerRefusedHeader = "X-Discovery-Refused"

// Handler returns the root handler (all /discovery routes, /metrics,
// /healthz, /readyz).
func (s *Server) Handler() http.Handler { return s.e }

// Serve serves on ln until Shutdown, within the connection caps. It
// returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	rl := newReentryListener(&limitListener{Listener: ln, caps: s.caps, plain: true}, s.takeFresh)
	s.reentry.Store(rl)
	rl.start()
	err := s.srv.Serve(rl)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTLS serves HTTPS on ln (TCP) until Shutdown, within the same caps
// as Serve, with the certificate of http.tls (reloaded when its files
// change). HTTP/1.1 only: long-polls hold one connection each either way.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		return errors.New("api: ServeTLS without http.tls.addr")
	}
	conf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: s.tls.getCertificate,
	}
	err := s.srv.Serve(tls.NewListener(&limitListener{Listener: ln, caps: s.caps}, conf))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown answers every parked poll at once (-304), stops accepting new
// connections and waits (bounded by ctx) for in-flight requests. Idle
// keep-alive connections, and connections that never sent a request, are
// closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.pollStop() // first: parked polls answer -304 and finish
	s.interruptLean()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Shutdown(ctx) }()
	// net/http closes idle connections but waits 5 s for those in
	// StateNew; close them until Shutdown is done (a connection accepted
	// just before the listener closed may appear after the first pass).
	tick := time.NewTicker(shutdownConnPoll)
	defer tick.Stop()
	for {
		s.closeNewConns()
		select {
		case err := <-errc:
			s.baseStop()
			// Lean polls answered -304 at pollStop and interruptLean; wait
			// for their writes.
			lean := make(chan struct{})
			go func() { s.leanWait(); close(lean) }()
			select {
			case <-lean:
			case <-ctx.Done():
				if err == nil {
					err = ctx.Err()
				}
			}
			return err
		case <-tick.C:
		}
	}
}

// Close stops the server at once: parked polls end, the listener and every
// connection are closed without waiting (a crash, for tests).
func (s *Server) Close() {
	s.closed.Store(true) // before the interrupt
	s.pollStop()
	s.interruptLean()
	_ = s.srv.Close()
	s.baseStop()
	s.leanWait() // they answer -304 at once and cannot give their connection back
}

// leanAdd counts the goroutine of a connection that becomes lean, unless
// Shutdown or Close already waits for them (false: serve it the ordinary
// way). A connection is hijacked out of net/http's tracking, so its
// Shutdown can return while a handler is about to park a poll lean; a
// WaitGroup must not go up from zero while it is waited on.
func (s *Server) leanAdd() bool {
	s.leanMu.Lock()
	defer s.leanMu.Unlock()
	if s.leanDone {
		return false
	}
	s.leanWG.Add(1)
	return true
}

// leanLink adds a lean connection to those Shutdown interrupts; it is
// removed when let go (leanPoll.release).
func (s *Server) leanLink(p *leanPoll) {
	s.leanMu.Lock()
	p.lnext = s.leanConns
	if s.leanConns != nil {
		s.leanConns.lprev = p
	}
	s.leanConns, p.linked = p, true
	s.leanMu.Unlock()
}

func (s *Server) leanUnlink(p *leanPoll) {
	s.leanMu.Lock()
	if p.linked {
		if p.lprev != nil {
			p.lprev.lnext = p.lnext
		} else {
			s.leanConns = p.lnext
		}
		if p.lnext != nil {
			p.lnext.lprev = p.lprev
		}
		p.lprev, p.lnext, p.linked = nil, nil, false
	}
	s.leanMu.Unlock()
}

// interruptLean ends the wait of every lean connection (after pollStop: a
// wait that starts later sees pollCtx ended before it blocks, and a
// connection linked later does too).
func (s *Server) interruptLean() {
	s.leanMu.Lock()
	for p := s.leanConns; p != nil; p = p.lnext {
		p.interrupt()
	}
	s.leanMu.Unlock()
}

// leanWait stops new lean connections and waits for the running ones.
func (s *Server) leanWait() {
	s.leanMu.Lock()
	s.leanDone = true
	s.leanMu.Unlock()
	s.leanWG.Wait()
}

// shutdownConnPoll is how often Shutdown closes connections that have not
// sent a request; net/http re-checks its connections at most every 500 ms.
const shutdownConnPoll = 20 * time.Millisecond

// connState tracks the connections in StateNew (http.Server.ConnState).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.connMu.Lock()
	if st == http.StateNew {
		s.newConns[c] = struct{}{}
	} else {
		delete(s.newConns, c)
	}
	s.connMu.Unlock()
}

func (s *Server) closeNewConns() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for c := range s.newConns {
		_ = c.Close() // its serving goroutine sees the error and ends
		delete(s.newConns, c)
	}
}

// instrument wraps every request: a panic is recovered and logged at Error
// with its stack; an error a handler returns is rendered by handleError;
// then the request is counted, timed and (at Debug only) logged. echo's
// automatic OPTIONS answer (204 + Allow) becomes 405 like every other method
// a route does not serve (spec 2.1.2).
func (s *Server) instrument(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		var err error
		if c.Request().Method == http.MethodOptions && c.Get(echo.ContextKeyHeaderAllow) != nil {
			err = echo.ErrMethodNotAllowed
		} else {
			err = s.callRecover(next, c)
		}
		if err != nil {
			c.Error(err)
		}
		s.observe(c, start, err)
		return err
	}
}

// callRecover runs h, turning a panic into an error (http.ErrAbortHandler is
// net/http's own signal and is passed on).
func (s *Server) callRecover(h echo.HandlerFunc, c echo.Context) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler { //nolint:errorlint // the sentinel value net/http panics with, never wrapped
			panic(r)
		}
		if err, _ = r.(error); err == nil {
			err = fmt.Errorf("%v", r)
		}
		stack := make([]byte, 4<<10)
		stack = stack[:runtime.Stack(stack, false)]
		s.log.Error("panic in handler", "route", c.Path(), "err", err, "stack", string(stack))
	}()
	return h(c)
}

// readGate answers -503 on read-gated routes while the node is not ready
// (init-protect, spec 2.8.1); writes are never gated.
func (s *Server) readGate(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.ready() {
			return reply(c, wire.CodeUnavailable)
		}
		return h(c)
	}
}

// boundRequest bounds a non-poll request by RequestTimeout through the
// connection read deadline, so a slow body cannot hold a handler (ignored
// where the writer cannot set deadlines, e.g. recorders). These handlers
// never wait on anything else (registry calls do not block, replication is
// queued), so no context deadline is needed.
func (s *Server) boundRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// net/http's writer has the method; wrapped writers go through the
		// controller (which unwraps), others cannot set deadlines.
		w := c.Response().Writer
		if d, ok := w.(interface{ SetReadDeadline(time.Time) error }); ok {
			_ = d.SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
		} else if _, ok := w.(interface{ Unwrap() http.ResponseWriter }); ok {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
		}
		return next(c)
	}
}

// handleError renders what no handler answered: unknown paths (404) and
// wrong methods (405) as text/plain like the original (spec 2.1.2), and
// unexpected errors (a recovered panic) as -503 so the client fails over.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			_ = c.String(http.StatusNotFound, "404 page not found\n")
			return
		case http.StatusMethodNotAllowed:
			_ = c.String(http.StatusMethodNotAllowed, "Method Not Allowed\n")
			return
		}
		if he.Code < http.StatusInternalServerError {
			_ = c.String(he.Code, http.StatusText(he.Code)+"\n")
			return
		}
	}
	s.log.Error("request failed", "method", c.Request().Method, "route", c.Path(), "err", err)
	if isEnvelopeRoute(c.Path()) {
		_ = reply(c, wire.CodeUnavailable)
		return
	}
	_ = c.String(http.StatusInternalServerError, "internal error\n")
}

// isEnvelopeRoute reports whether the route answers in the discovery
// envelope (the protocol routes of spec 2.1).
func isEnvelopeRoute(route string) bool {
	switch route {
	case pathRegister, pathRenew, pathCancel, pathSet, pathFetchAll, pathFetch,
		pathFetchs, pathPoll, pathPolls, pathNodes,
		wire.PathAdminStatus, wire.PathAdminApps, wire.PathAdminApp, wire.PathAdminChanges:
		return true
	}
	return false
}

// Route labels of the metrics, one index each (routeIndex).
var routeLabels = [...]string{pathRegister, pathRenew, pathCancel, pathSet, pathFetchAll, pathFetch,
	pathFetchs, pathPoll, pathPolls, pathNodes, pathTargets, pathInternal, pathMetrics, pathHealthz,
	pathReadyz, wire.PathAdminStatus, wire.PathAdminApps, wire.PathAdminApp, wire.PathAdminChanges, pathUI, "other"}

// routeIndex bounds the route label to the registered paths ("other" for
// the rest: unknown paths, 405s).
func routeIndex(route string) int {
	switch route {
	case pathRegister:
		return 0
	case pathRenew:
		return 1
	case pathCancel:
		return 2
	case pathSet:
		return 3
	case pathFetchAll:
		return 4
	case pathFetch:
		return 5
	case pathFetchs:
		return 6
	case pathPoll:
		return 7
	case pathPolls:
		return 8
	case pathNodes:
		return 9
	case pathTargets:
		return 10
	case pathInternal:
		return 11
	case pathMetrics:
		return 12
	case pathHealthz:
		return 13
	case pathReadyz:
		return 14
	case wire.PathAdminStatus:
		return 15
	case wire.PathAdminApps:
		return 16
	case wire.PathAdminApp:
		return 17
	case wire.PathAdminChanges:
		return 18
	case pathUI + "*", "/ui":
		return 19
	}
	return len(routeLabels) - 1
}

// observe is the access log and the request metrics. Access lines are Debug
// (no line per renew at Info); real failures are logged where they happen
// (handleError, callRecover) at Error. The code label is the discovery code
// of the answer (its Kratos-Status-Code header), "canceled" for a poll whose
// client left, else the HTTP status.
func (s *Server) observe(c echo.Context, start time.Time, err error) {
	if v, _ := c.Get(ctxKeyCode).(string); v == codeLabelLean {
		return // counted when the lean poll ends
	}
	latency := time.Since(start)
	ri := routeIndex(c.Path())
	res := c.Response()
	var code string
	if v := res.Header()[headerKratosCode]; len(v) > 0 {
		code = v[0]
	} else if v, ok := c.Get(ctxKeyCode).(string); ok {
		code = v
	} else {
		code = strconv.Itoa(res.Status)
	}
	s.m.request(ri, code).Inc()
	if ri != routeIndex(pathPoll) && ri != routeIndex(pathPolls) {
		s.m.observer(ri).Observe(latency.Seconds())
	}
	const level = slog.LevelDebug
	ctx := c.Request().Context()
	if !s.log.Enabled(ctx, level) {
		return
	}
	req := c.Request()
	path := req.URL.Path
	if path == "" {
		path = "/"
	}
	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("path", path),
		slog.String("route", routeLabels[ri]),
		slog.Int("status", res.Status),
		slog.String("code", code),
		slog.Duration("latency", latency),
		slog.String("remote", c.RealIP()),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.log.LogAttrs(context.WithoutCancel(ctx), level, "http request", attrs...)
}
