package api

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func ipNet(s string) net.Addr {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// C64: the advertised address is never an unspecified address (spec 7.5.4).
func TestAdvertiseAddr(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		return []net.Addr{ipNet("127.0.0.1/8"), ipNet("fe80::1/64"), ipNet("2001:db8::5/64"), ipNet("10.1.2.3/24")}, nil
	}
	onlyV6 := func() ([]net.Addr, error) { return []net.Addr{ipNet("::1/128"), ipNet("2001:db8::5/64")}, nil }
	onlyLoop := func() ([]net.Addr, error) { return []net.Addr{ipNet("127.0.0.1/8"), ipNet("::1/128")}, nil }
	broken := func() ([]net.Addr, error) { return nil, errors.New("no interfaces") }
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }

	for _, tc := range []struct {
		name       string
		configured string
		bound      net.Addr
		ifaces     func() ([]net.Addr, error)
		want       string
		err        string
	}{
		{"configured ip", "10.0.0.9:7171", tcp("0.0.0.0:7171"), ifaces, "10.0.0.9:7171", ""},
		{"configured hostname", "node1:7171", nil, ifaces, "node1:7171", ""},
		{"configured v6", "[2001:db8::9]:7171", nil, ifaces, "[2001:db8::9]:7171", ""},
		{"configured 0.0.0.0", "0.0.0.0:7171", nil, ifaces, "", "unspecified"},
		{"configured ::", "[::]:7171", nil, ifaces, "", "unspecified"},
		{"configured no host", ":7171", nil, ifaces, "", "host is empty"},
		{"configured no port", "10.0.0.9", nil, ifaces, "", "missing port"},
		{"configured port 0", "10.0.0.9:0", nil, ifaces, "", "1..65535"},
		{"configured port text", "10.0.0.9:http", nil, ifaces, "", "1..65535"},
		{"bound specific", "", tcp("192.168.1.4:7171"), ifaces, "192.168.1.4:7171", ""},
		{"bound 0.0.0.0 -> first v4 unicast", "", tcp("0.0.0.0:7171"), ifaces, "10.1.2.3:7171", ""},
		{"bound :: -> first v4 unicast", "", tcp("[::]:8000"), ifaces, "10.1.2.3:8000", ""},
		{"bound 0.0.0.0 -> v6 when no v4", "", tcp("0.0.0.0:7171"), onlyV6, "[2001:db8::5]:7171", ""},
		{"bound 0.0.0.0 -> loopback fallback", "", tcp("0.0.0.0:7171"), onlyLoop, "127.0.0.1:7171", ""},
		{"bound 0.0.0.0 -> fallback on error", "", tcp("0.0.0.0:7171"), broken, "127.0.0.1:7171", ""},
		{"nothing", "", nil, ifaces, "", "no bound address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := advertiseAddr(tc.configured, tc.bound, tc.ifaces)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// The real function on a real wildcard listener never yields an
	// unspecified host.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got, err := AdvertiseAddr("", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(got)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		t.Fatalf("AdvertiseAddr = %q", got)
	}
}
