package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// processCPU is utime+stime of pid, in seconds (/proc/<pid>/stat).
func processCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseFloat(f[11], 64) // field 14: utime
	s, err2 := strconv.ParseFloat(f[12], 64) // field 15: stime
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad /proc stat times")
	}
	return (u + s) / clockTicks, nil
}

// processRSS is the resident set of pid in bytes (VmRSS of
// /proc/<pid>/status, which the kernel gives in kB).
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad VmRSS %q", strings.TrimSpace(v))
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), nil
}

// pidListening finds the local process listening on addr's TCP port (and
// address, unless it listens on all of them): the socket's inode from
// /proc/net/tcp{,6}, then the process holding it among /proc/*/fd.
func pidListening(addr string) (int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return 0, fmt.Errorf("resolve %s: no address", host)
		}
		ip = ips[0].IP
	}
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(file, ip, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on %s here", addr)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
			if err == nil && pid != os.Getpid() {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no visible process holds the socket of %s", addr)
}

// listeningInodes adds the inodes of the LISTEN sockets of file on port
// whose local address is ip or unspecified.
func listeningInodes(file string, ip net.IP, port int, out map[string]bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		h, p, ok := strings.Cut(fl[1], ":")
		if !ok {
			continue
		}
		if pn, err := strconv.ParseUint(p, 16, 16); err != nil || int(pn) != port {
			continue
		}
		local := procIP(h)
		if local == nil || local.IsUnspecified() || local.Equal(ip) {
			out[fl[9]] = true
		}
	}
	return sc.Err()
}

// procIP decodes the hex address of /proc/net/tcp (little-endian words).
func procIP(h string) net.IP {
	b := make([]byte, len(h)/2)
	for i := range b {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil
		}
		b[i] = byte(v)
	}
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}
