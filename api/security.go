package api

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/wire"
)

// SecurityConfig is what the HTTP API enforces beyond the protocol
// (configuration section "security"). kratos clients send no credentials,
// so register, renew, cancel and polls stay open by protocol; everything
// an operator or a peer does is guarded (docs/security.md).
type SecurityConfig struct {
	// AdminToken, when set, is required (Authorization: Bearer <token>)
	// on a set that does not come from a peer, on fetch/all (peers and
	// legacy nodes excepted) and on the admin API and the web page's
	// actions. Compared in constant time; never printed.
	AdminToken string `mapstructure:"admin_token"`
	// AdminTokenFile names a file holding the token (surrounding spaces
	// ignored), read at start; an alternative to AdminToken.
	AdminTokenFile string `mapstructure:"admin_token_file"`
	// WriteCIDRs, when not empty, are the only networks client writes
	// (register, renew, cancel, set) are taken from; others are refused
	// (-403). Peers and the admin token are not affected.
	WriteCIDRs []string `mapstructure:"write_cidrs"`
	// KeyOwnership: while an instance is live, only the client address that
	// registered it (or the admin token) may replace, renew, cancel or set
	// it; others are refused (-403).
	KeyOwnership bool `mapstructure:"key_ownership"`
}

// Validate reports invalid fields by their key under "security".
func (c SecurityConfig) Validate() error {
	var errs []error
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		errs = append(errs, errors.New("security.admin_token_file: set either it or security.admin_token, not both"))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("security.admin_token: at least 16 characters (discovery keygen makes a good one)"))
	}
	for i, s := range c.WriteCIDRs {
		if _, err := netip.ParsePrefix(strings.TrimSpace(s)); err != nil {
			errs = append(errs, fmt.Errorf("security.write_cidrs[%d]: %q is not a CIDR: %w", i, s, err))
		}
	}
	return errors.Join(errs...)
}

// token returns the admin token, reading AdminTokenFile when set.
func (c SecurityConfig) token() (string, error) {
	if c.AdminTokenFile == "" {
		return c.AdminToken, nil
	}
	b, err := os.ReadFile(c.AdminTokenFile)
	if err != nil {
		return "", fmt.Errorf("security.admin_token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", errors.New("security.admin_token_file: the token must be at least 16 characters")
	}
	return t, nil
}

// PeerCheck tells requests of the cluster's nodes apart from clients'. A
// public request that carries peer-only parameters (replication,
// from_zone, dirty_timestamp, set_timestamp, and latest_timestamp on
// register and cancel) has them honoured only when FromPeer says it comes
// from a node: signed with the cluster secret, or sent by a configured
// legacy node. body is the request's body as read.
type PeerCheck interface {
	FromPeer(r *http.Request, body []byte) bool
}

// LegacyCheck recognises a request from a configured legacy
// (bilibili/discovery) node. Legacy nodes cannot sign: their requests are
// trusted by source address (docs/security.md, docs/migration.md).
type LegacyCheck interface {
	FromLegacy(r *http.Request) bool
}

// peerOnly are the parameters of spec 4.0 that only nodes send.
var peerOnly = [...]string{"replication", "from_zone", "dirty_timestamp", "set_timestamp", "latest_timestamp", "reg_timestamp"}

// stripPeerParams removes the peer-only parameters from v and reports
// whether there were any.
func stripPeerParams(v url.Values) bool {
	found := false
	for _, k := range peerOnly {
		if _, ok := v[k]; ok {
			delete(v, k)
			found = true
		}
	}
	return found
}

func hasPeerParams(v url.Values) bool {
	for _, k := range peerOnly {
		if _, ok := v[k]; ok {
			return true
		}
	}
	return false
}

// guard applies the security configuration to requests.
type guard struct {
	token    []byte
	nets     []netip.Prefix
	owners   bool
	peers    PeerCheck
	legacy   LegacyCheck
	log      *slog.Logger
	refusals *prometheus.CounterVec // route, reason

	mu     sync.Mutex // guards logged
	logged map[netip.Addr]time.Time
}

func newGuard(cfg SecurityConfig, peers PeerCheck, legacy LegacyCheck, log *slog.Logger) (*guard, error) {
	tok, err := cfg.token()
	if err != nil {
		return nil, err
	}
	g := &guard{peers: peers, legacy: legacy, owners: cfg.KeyOwnership, log: log, logged: map[netip.Addr]time.Time{}}
	if tok != "" {
		g.token = []byte(tok)
	}
	for _, s := range cfg.WriteCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("security.write_cidrs: %w", err)
		}
		g.nets = append(g.nets, p.Masked())
	}
	g.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "discovery_auth_refusals_total",
		Help: "Requests refused or downgraded by the security rules, by route and reason: peer_params (peer-only parameters from a non-peer, dropped), reserved_appid, admin_missing, admin_wrong, write_cidr, key_owner, peer_auth, peer_replay, no_secret, peer_busy.",
	}, []string{"route", "reason"})
	return g, nil
}

// source is the request's client address (the TCP peer; X-Forwarded-For
// is never trusted).
func source(c echo.Context) netip.Addr {
	ap, err := netip.ParseAddrPort(c.Request().RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	// Without the zone: the owner recorded for a key has none, and a prefix
	// of security.write_cidrs contains no zoned address.
	return ap.Addr().Unmap().WithZone("")
}

// refused counts a refusal and logs it, once a minute per source at most
// (a flood of refusals does not flood the log).
func (g *guard) refused(c echo.Context, reason, detail string) {
	route := routeLabels[routeIndex(c.Path())]
	g.refusals.WithLabelValues(route, reason).Inc()
	src := source(c)
	now := time.Now()
	g.mu.Lock()
	last, seen := g.logged[src]
	if seen && now.Sub(last) < time.Minute {
		g.mu.Unlock()
		return
	}
	if len(g.logged) >= 4096 {
		clear(g.logged) // bounded: at worst a source is logged again sooner
	}
	g.logged[src] = now
	g.mu.Unlock()
	g.log.Warn("request refused", "route", route, "reason", reason, "source", src.String(), "detail", detail)
}

// fromPeer reports whether the request comes from a node of the cluster:
// signed with its secret, or sent by a configured legacy node (legacy).
func (g *guard) fromPeer(c echo.Context, body []byte) (peer, legacy bool) {
	if g.peers != nil && g.peers.FromPeer(c.Request(), body) {
		return true, false
	}
	if g.legacy != nil && g.legacy.FromLegacy(c.Request()) {
		return true, true
	}
	return false, false
}

// adminCode checks the admin token: 0 when it is not configured or
// matches, else the code and message of the refusal (-401 missing, -403
// wrong).
func (g *guard) adminCode(c echo.Context) (int, string, string) {
	if g.token == nil {
		return wire.CodeOK, "", ""
	}
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return wire.CodeUnauthorized, "admin_missing", "admin token required: send the header Authorization: Bearer <security.admin_token>"
	}
	if subtle.ConstantTimeCompare([]byte(tok), g.token) != 1 {
		return wire.CodeForbidden, "admin_wrong", "admin token does not match security.admin_token"
	}
	return wire.CodeOK, "", ""
}

// hasAdmin reports whether the request carries the configured admin token.
func (g *guard) hasAdmin(c echo.Context) bool {
	if g.token == nil {
		return false
	}
	code, _, _ := g.adminCode(c)
	return code == wire.CodeOK
}

// requireAdmin answers the refusal when the admin token is configured and
// missing or wrong; ok false means the handler returns err.
func (g *guard) requireAdmin(c echo.Context) (ok bool, err error) {
	code, reason, msg := g.adminCode(c)
	if code == wire.CodeOK {
		return true, nil
	}
	g.refused(c, reason, msg)
	return false, writeBody(c, code, envelope(code, msg, nil))
}

// writeAllowed applies security.write_cidrs to a client write.
func (g *guard) writeAllowed(c echo.Context) bool {
	if len(g.nets) == 0 {
		return true
	}
	src := source(c)
	for _, p := range g.nets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// refuse answers -403 with msg after counting the refusal.
func (g *guard) refuse(c echo.Context, reason, msg string) error {
	g.refused(c, reason, msg)
	return writeBody(c, wire.CodeForbidden, envelope(wire.CodeForbidden, msg, nil))
}

// audit logs an admin action (set, cancel, fetch/all with the token): who,
// from where, what.
func (g *guard) audit(c echo.Context, action string, attrs ...any) {
	g.log.Info("audit", append([]any{"action", action, "source", source(c).String(), "admin_token", g.hasAdmin(c)}, attrs...)...)
}
