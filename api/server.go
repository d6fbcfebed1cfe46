package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discovery-go/discovery/registry"
)

// Replicator forwards writes this node accepted from a client (replication
// = false) to its peers. Implemented by syncup.Cluster. Calls never block:
// the request is answered without waiting for peers (spec 7.2.2).
// fromZone is the request's from_zone flag: true means the write came from
// another zone and must be forwarded only inside this node's zone.
type Replicator interface {
	Register(ins registry.Instance, fromZone bool)
	Renew(ins registry.Instance, fromZone bool)
	Cancel(t registry.Tombstone, fromZone bool)
	Set(req registry.SetRequest, fromZone bool)
}

// Node is one entry of /discovery/nodes (spec 4.10).
type Node struct {
	Addr   string `json:"addr"`
	Status int    `json:"status"` // 0 UP, 1 LOST (suspect)
	Zone   string `json:"zone"`
}

// Deps are the collaborators of the HTTP layer. Only Registry is required.
type Deps struct {
	Registry *registry.Registry
	// Replicator nil: standalone node, nothing is forwarded.
	Replicator Replicator
	// Nodes lists live same-zone nodes including self; nil: Self only.
	Nodes func() []Node
	// Ready reports whether init-protect / startup sync has ended; nil:
	// always ready. While false, read-gated routes answer -503 and /readyz 503.
	Ready func() bool
	// Internal, if set, is mounted at /discovery/internal/ (peer protocol).
	Internal http.Handler
	// Self is this node (addr = advertised HTTP host:port, zone).
	Self   Node
	Logger *slog.Logger
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
	nodes    func() []Node
	ready    func() bool
	self     Node
	log      *slog.Logger
	e        *echo.Echo
	srv      *http.Server
	m        *metrics
	gatherer prometheus.Gatherer

	// pollCtx ends at Shutdown: every parked poll answers -304 at once.
	pollCtx  context.Context
	pollStop context.CancelFunc
	// baseCtx is the parent of every request context; it ends after the
	// graceful drain so nothing outlives the server.
	baseCtx  context.Context
	baseStop context.CancelFunc

	parked atomic.Int64 // polls currently held
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
	m, err := newMetrics(regr, s.reg, s.parked.Load)
	if err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	s.m = m
	s.pollCtx, s.pollStop = context.WithCancel(context.Background())
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
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) buildEcho(internal http.Handler) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Clients connect directly; never trust X-Forwarded-For.
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError

	// Outermost first: the access log / metrics middleware sees the final
	// status (HandleError runs the error handler before logging); Recover
	// sits inside it so a panic is still logged and counted.
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		HandleError:   true,
		LogLatency:    true,
		LogMethod:     true,
		LogURIPath:    true,
		LogRoutePath:  true,
		LogRemoteIP:   true,
		LogStatus:     true,
		LogError:      true,
		LogValuesFunc: s.observe,
	}))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("panic in handler", "route", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(rejectOptions)

	gated := func(h echo.HandlerFunc) echo.HandlerFunc { return s.readGate(h) }
	bounded := s.boundRequest

	e.POST(pathRegister, s.register, bounded)
	e.POST(pathRenew, s.renew, bounded)
	e.POST(pathCancel, s.cancel, bounded)
	e.POST(pathSet, s.set, bounded)
	e.GET(pathFetchAll, gated(s.fetchAll), bounded)
	e.GET(pathFetch, gated(s.fetch), bounded)
	e.GET(pathFetchs, gated(s.fetchs), bounded)
	e.GET(pathNodes, gated(s.nodesHandler), bounded)
	// Long polls are bounded by their own hold, not RequestTimeout.
	e.GET(pathPoll, gated(s.poll))
	e.GET(pathPolls, gated(s.polls))
	e.GET(pathTargets, s.targets, bounded)

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
		e.Any(pathInternal, echo.WrapHandler(internal))
	}
	return e
}

// Handler returns the root handler (all /discovery routes, /metrics,
// /healthz, /readyz).
func (s *Server) Handler() http.Handler { return s.e }

// Serve serves on ln until Shutdown. It returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown answers every parked poll at once (-304), stops accepting new
// connections and waits (bounded by ctx) for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error {
	s.pollStop() // first: parked polls answer -304 and finish
	err := s.srv.Shutdown(ctx)
	s.baseStop()
	return err
}

// rejectOptions turns echo's automatic OPTIONS answer (204 + Allow) into 405
// like every other method a route does not serve (spec 2.1.2).
func rejectOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodOptions && c.Get(echo.ContextKeyHeaderAllow) != nil {
			return echo.ErrMethodNotAllowed
		}
		return next(c)
	}
}

// readGate answers -503 on read-gated routes while the node is not ready
// (init-protect, spec 2.8.1); writes are never gated.
func (s *Server) readGate(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.ready() {
			return reply(c, codeUnavailable)
		}
		return h(c)
	}
}

// boundRequest bounds a non-poll request by RequestTimeout: its context
// deadline, and the connection read deadline so a slow body cannot hold a
// handler (ignored where the writer cannot set deadlines, e.g. recorders).
func (s *Server) boundRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		deadline := time.Now().Add(s.cfg.RequestTimeout)
		_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(deadline)
		ctx, cancel := context.WithDeadline(c.Request().Context(), deadline)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
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
		_ = reply(c, codeUnavailable)
		return
	}
	_ = c.String(http.StatusInternalServerError, "internal error\n")
}

// isEnvelopeRoute reports whether the route answers in the discovery
// envelope (the protocol routes of spec 2.1).
func isEnvelopeRoute(route string) bool {
	switch route {
	case pathRegister, pathRenew, pathCancel, pathSet, pathFetchAll, pathFetch,
		pathFetchs, pathPoll, pathPolls, pathNodes:
		return true
	}
	return false
}

// routeLabel bounds the route label to the registered paths.
func routeLabel(route string) string {
	switch route {
	case pathTargets, pathInternal, pathMetrics, pathHealthz, pathReadyz:
		return route
	}
	if isEnvelopeRoute(route) {
		return route
	}
	return "other"
}

// observe is the access log and the request metrics. Access lines are Debug
// (no line per renew at Info); real failures are logged where they happen
// (handleError, Recover) at Error.
func (s *Server) observe(c echo.Context, v middleware.RequestLoggerValues) error {
	route := routeLabel(v.RoutePath)
	code := ""
	switch ec := c.Get(ctxKeyCode).(type) {
	case int:
		code = fmtCode(ec)
	case string:
		code = ec
	default:
		code = fmtCode(v.Status)
	}
	s.m.requests.WithLabelValues(route, code).Inc()
	if route != pathPoll && route != pathPolls {
		s.m.latency.WithLabelValues(route).Observe(v.Latency.Seconds())
	}
	const level = slog.LevelDebug
	ctx := c.Request().Context()
	if !s.log.Enabled(ctx, level) {
		return nil
	}
	attrs := []slog.Attr{
		slog.String("method", v.Method),
		slog.String("path", v.URIPath),
		slog.String("route", route),
		slog.Int("status", v.Status),
		slog.String("code", code),
		slog.Duration("latency", v.Latency),
		slog.String("remote", v.RemoteIP),
	}
	if v.Error != nil {
		attrs = append(attrs, slog.String("err", v.Error.Error()))
	}
	s.log.LogAttrs(context.WithoutCancel(ctx), level, "http request", attrs...)
	return nil
}
