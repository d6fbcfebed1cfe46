package api

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// AdvertiseAddr computes the host:port this node publishes to clients and
// peers (infra.discovery addr, node list). It is never an unspecified
// address (spec 7.5.4, Defect D16):
//   - configured non-empty: must be host:port with a port in 1..65535 and a
//     host that is not 0.0.0.0 / ::; returned as given (hostnames allowed).
//   - else the bound listener address; an unspecified host is replaced by the
//     first non-loopback unicast interface address (IPv4 preferred), or
//     127.0.0.1 when there is none.
func AdvertiseAddr(configured string, bound net.Addr) (string, error) {
	return advertiseAddr(configured, bound, net.InterfaceAddrs)
}

func advertiseAddr(configured string, bound net.Addr, ifaceAddrs func() ([]net.Addr, error)) (string, error) {
	if configured != "" {
		host, port, err := splitHostPort(configured)
		if err != nil {
			return "", fmt.Errorf("advertise address %q: %w", configured, err)
		}
		if host == "" {
			return "", fmt.Errorf("advertise address %q: host is empty", configured)
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			return "", fmt.Errorf("advertise address %q: unspecified host is not routable", configured)
		}
		return net.JoinHostPort(host, port), nil
	}
	if bound == nil {
		return "", fmt.Errorf("advertise address: no configured address and no bound address")
	}
	host, port, err := splitHostPort(bound.String())
	if err != nil {
		return "", fmt.Errorf("bound address %q: %w", bound.String(), err)
	}
	// A host that is not an IP literal (a name) is published as given.
	if ip, perr := netip.ParseAddr(host); host != "" && (perr != nil || !ip.IsUnspecified()) {
		return net.JoinHostPort(host, port), nil //nolint:nilerr // a name is not an error here
	}
	return net.JoinHostPort(firstUnicast(ifaceAddrs), port), nil
}

func splitHostPort(hp string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(hp)
	if err != nil {
		return "", "", err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", "", fmt.Errorf("port %q: must be in 1..65535", port)
	}
	return host, port, nil
}

// firstUnicast returns the first global (non-loopback, non-link-local)
// unicast interface address, IPv4 first, else 127.0.0.1.
func firstUnicast(ifaceAddrs func() ([]net.Addr, error)) string {
	addrs, err := ifaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	var v6 string
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		default:
			continue
		}
		if !ip.IsGlobalUnicast() { // excludes loopback, link-local, unspecified, multicast
			continue
		}
		if ip.To4() != nil {
			return ip.String()
		}
		if v6 == "" {
			v6 = ip.String()
		}
	}
	if v6 != "" {
		return v6
	}
	return "127.0.0.1"
}
