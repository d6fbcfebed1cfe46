// Package resolver is a gRPC name resolver (google.golang.org/grpc) backed
// by the discovery client: a target discovery:///<appid> resolves to the
// grpc:// addresses of the appid's UP instances and follows them as they
// change.
//
// Use it per channel, without global state:
//
//	conn, err := grpc.NewClient("discovery:///demo.svc",
//		grpc.WithResolvers(resolver.NewBuilder(dc)),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// The kratos form discovery://default/<appid> is accepted too. A query
// parameter zone (discovery:///demo.svc?zone=sh001) overrides the preferred
// zone, which is otherwise the client's Config.Zone.
//
// Resolution rules: each UP instance with at least one grpc:// addr becomes
// one resolver.Endpoint (all its grpc addrs, in order) whose Attributes carry
// an Info (zone, version, weight, ...; see InfoFromEndpoint). Instances of
// the preferred zone are used when there is any; otherwise all zones. Poll
// failures are reported with ClientConn.ReportError; an empty answer never
// replaces a non-empty list (the channel keeps its last good list, as the
// kratos resolver does), and before the first list it is reported as an
// error. ResolveNow does nothing: updates are pushed by the long-poll.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/discovery-go/discovery/api/client"
)

// Scheme is the target scheme served by the Builder.
const Scheme = "discovery"

// DefaultWeight is the weight of an instance without a valid positive
// metadata "weight" (kratos' default).
const DefaultWeight = 10

// Info describes the instance behind a resolver.Endpoint.
type Info struct {
	AppID    string
	Hostname string
	Region   string
	Zone     string
	Version  string
	Color    string // metadata "color"
	Cluster  string // metadata "cluster"
	Weight   int    // metadata "weight", DefaultWeight when missing or <= 0
}

type infoKey struct{}

// InfoFromEndpoint returns the Info the resolver attached to ep.
func InfoFromEndpoint(ep resolver.Endpoint) (Info, bool) {
	v, ok := ep.Attributes.Value(infoKey{}).(Info)
	return v, ok
}

// Option configures a Builder.
type Option func(*Builder)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(b *Builder) { b.log = l } }

// Builder builds resolvers for the "discovery" scheme on top of one
// client.Client (which must outlive every channel using the Builder).
type Builder struct {
	c   *client.Client
	log *slog.Logger
}

var _ resolver.Builder = (*Builder)(nil)

// NewBuilder returns a Builder for grpc.WithResolvers.
func NewBuilder(c *client.Client, opts ...Option) *Builder {
	b := &Builder{c: c, log: client.DiscardLogger()}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Register installs a Builder for c in gRPC's global resolver registry, so
// that plain grpc.NewClient("discovery:///appid") works. gRPC requires this
// to happen during initialization (it is not safe for concurrent use); prefer
// NewBuilder with grpc.WithResolvers.
func Register(c *client.Client, opts ...Option) { resolver.Register(NewBuilder(c, opts...)) }

// Scheme returns "discovery".
func (b *Builder) Scheme() string { return Scheme }

// Build starts watching the target's appid. It fails for a target without
// an appid or when the client is closed.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	appid := target.Endpoint()
	if appid == "" || strings.Contains(appid, "/") {
		return nil, fmt.Errorf("discovery resolver: target %q: want discovery:///<appid> or discovery://default/<appid>", target.URL.String())
	}
	zone := target.URL.Query().Get("zone")
	if zone == "" {
		zone = b.c.Config().Zone
	}
	w, err := b.c.Watch(appid)
	if err != nil {
		return nil, fmt.Errorf("discovery resolver: %s: %w", appid, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &discoveryResolver{
		appid: appid, zone: zone, cc: cc, w: w, cancel: cancel, done: make(chan struct{}),
		log: b.log.With("appid", appid),
	}
	go r.run(ctx)
	return r, nil
}

type discoveryResolver struct {
	appid  string
	zone   string
	cc     resolver.ClientConn
	w      *client.Watcher
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// ResolveNow does nothing: the long-poll pushes every change.
func (r *discoveryResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch and waits for the resolver's goroutine, so no
// ClientConn method is called after it returns.
func (r *discoveryResolver) Close() {
	r.cancel()
	r.w.Close()
	<-r.done
}

func (r *discoveryResolver) run(ctx context.Context) {
	defer close(r.done)
	have := false // a non-empty list was pushed
	for {
		set, err := r.w.Next(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, client.ErrClosed):
			// The client was closed under a live channel: nothing can be
			// resolved any more; say so and stop.
			r.cc.ReportError(fmt.Errorf("discovery resolver: %s: %w", r.appid, err))
			return
		case err != nil:
			r.log.Debug("discovery poll failed", "err", err)
			r.cc.ReportError(fmt.Errorf("discovery resolver: %s: %w", r.appid, err))
			continue
		}
		eps := Endpoints(set, r.zone)
		if len(eps) == 0 {
			if have {
				r.log.Warn("discovery answered no usable instance; keeping the last list")
			} else {
				r.cc.ReportError(fmt.Errorf("discovery resolver: %s: no UP instance with a grpc:// address", r.appid))
			}
			continue
		}
		if err := r.cc.UpdateState(resolver.State{Endpoints: eps, Addresses: addressesOf(eps)}); err != nil {
			r.log.Warn("gRPC rejected the resolver update", "err", err)
		}
		have = true
	}
}

// Endpoints converts an instance set: UP instances with grpc:// addrs, those
// of zone when there is any, otherwise those of all zones; sorted by first
// address so that equal sets give equal states.
func Endpoints(set *client.Instances, zone string) []resolver.Endpoint {
	build := func(zones []string) []resolver.Endpoint {
		var eps []resolver.Endpoint
		for _, z := range zones {
			for _, in := range set.Zones[z] {
				if in.Status != client.StatusUp {
					continue
				}
				hps := in.HostPorts("grpc")
				if len(hps) == 0 {
					continue
				}
				ep := resolver.Endpoint{Attributes: attributes.New(infoKey{}, infoOf(&in))}
				for _, hp := range hps {
					ep.Addresses = append(ep.Addresses, resolver.Address{Addr: hp})
				}
				eps = append(eps, ep)
			}
		}
		return eps
	}
	eps := build([]string{zone})
	if len(eps) == 0 {
		eps = build(sortedZones(set))
	}
	slices.SortFunc(eps, func(a, b resolver.Endpoint) int { return strings.Compare(a.Addresses[0].Addr, b.Addresses[0].Addr) })
	return eps
}

// addressesOf flattens the endpoints' addresses. gRPC before v1.66 hands
// round_robin only State.Addresses (deprecated since, but still read), so
// the resolver sets both for the older versions this module supports.
func addressesOf(eps []resolver.Endpoint) []resolver.Address {
	var out []resolver.Address
	for _, ep := range eps {
		out = append(out, ep.Addresses...)
	}
	return out
}

func infoOf(in *client.Instance) Info {
	w, err := strconv.Atoi(in.Metadata["weight"])
	if err != nil || w <= 0 {
		w = DefaultWeight
	}
	return Info{
		AppID: in.AppID, Hostname: in.Hostname, Region: in.Region, Zone: in.Zone, Version: in.Version,
		Color: in.Metadata["color"], Cluster: in.Metadata["cluster"], Weight: w,
	}
}

// sortedZones returns the zones of set in order.
func sortedZones(set *client.Instances) []string {
	zones := make([]string, 0, len(set.Zones))
	for z := range set.Zones {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	return zones
}
