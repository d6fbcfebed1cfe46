package harness

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// socketOwner finds which of the candidate processes holds the client end of
// a TCP connection that a proxy accepted: client is the connection's remote
// address as the proxy sees it, server the proxy's local address. Linux keeps
// every socket of the network namespace in /proc/net/tcp{,6} with its inode,
// and each process's fds in /proc/<pid>/fd as "socket:[inode]" links, which
// a process may read for its own children without privileges.
//
// found is false when no process holds such a socket any more (the client
// closed it or died);
// pid is 0 when the socket exists but none of the candidates owns it (the
// test process itself, or a client program).
func socketOwner(client, server netip.AddrPort, candidates []int) (pid int, found bool, err error) {
	inode, found, err := findInode(client, server)
	if err != nil || !found {
		return 0, found, err
	}
	want := "socket:[" + inode + "]"
	for _, p := range candidates {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // exited meanwhile
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
				return p, true, nil
			}
		}
	}
	return 0, true, nil
}

// findInode returns the inode of the socket whose local address is client
// and remote address is server.
func findInode(client, server netip.AddrPort) (string, bool, error) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		inode, ok, err := scanProcNet(f, client, server)
		if err != nil {
			return "", false, err
		}
		if ok {
			return inode, true, nil
		}
	}
	return "", false, nil
}

func scanProcNet(path string, local, remote netip.AddrPort) (string, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "", false, nil
		}
		return "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		l, err1 := parseProcAddr(fields[1])
		r, err2 := parseProcAddr(fields[2])
		if err1 != nil || err2 != nil {
			continue
		}
		if sameEndpoint(l, local) && sameEndpoint(r, remote) {
			if fields[9] == "0" {
				// Orphaned: its process closed it or died (e.g. FIN_WAIT
				// after a SIGKILL). Nobody owns it any more.
				return "", false, nil
			}
			return fields[9], true, nil
		}
	}
	return "", false, sc.Err()
}

// sameEndpoint compares ignoring the IPv4-in-IPv6 mapping, since a tcp6
// socket shows an IPv4 peer as ::ffff:a.b.c.d.
func sameEndpoint(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseProcAddr decodes "0100007F:1F90": the address is printed as 32-bit
// words in host byte order, the port as a plain hex number.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
