package harness

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// The test binary doubles as a helper "node" process, so the fault fabric is
// tested with real processes whose sockets /proc attributes to them.
func TestMain(m *testing.M) {
	if os.Getenv("HARNESS_HELPER") == "1" {
		helperMain()
		return
	}
	Main(m)
}

// helperMain binds a UDP socket (printing "udp <addr>"), then runs stdin
// commands: "tcp ADDR" dials ADDR, sends ping and prints the echo or the
// error; "udp ADDR" sends a datagram from its socket and prints the reply.
func helperMain() {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Println("fatal", err)
		os.Exit(1)
	}
	fmt.Println("udp", pc.LocalAddr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, addr, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "tcp":
			fmt.Println("tcp", helperTCP(addr))
		case "udp":
			fmt.Println("udp-reply", helperUDP(pc, addr))
		}
	}
}

func helperTCP(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "err dial"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "err write"
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "err read"
	}
	return "ok " + strings.TrimSpace(line)
}

func helperUDP(pc *net.UDPConn, addr string) string {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "err resolve"
	}
	if _, err := pc.WriteToUDP([]byte("ping"), ua); err != nil {
		return "err write"
	}
	_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 100)
	n, _, err := pc.ReadFromUDP(buf)
	if err != nil {
		return "err timeout"
	}
	return "ok " + string(buf[:n])
}

// echoServer answers "echo:<line>" on TCP and "echo:<datagram>" on UDP, on
// one port, standing in for a node's gossip listener.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	f := NewFabric() // reuse its TCP+UDP same-port listener logic
	p, err := f.newProxy(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = c.Write([]byte("echo:" + line))
				}
			}()
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 100)
		for {
			n, from, err := p.pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = p.pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { p.ln.Close(); p.pc.Close(); <-done; <-done })
	return p.ln.Addr().(*net.TCPAddr).AddrPort()
}

func startHelper(t *testing.T, name string) (*Process, netip.AddrPort) {
	t.Helper()
	p := StartProcess(t, name, os.Args[0], []string{"-test.run=^$"}, map[string]string{"HARNESS_HELPER": "1"})
	_, line := p.WaitLine(t, 0, 10*time.Second, "helper udp addr", func(l []byte) bool { return strings.HasPrefix(string(l), "udp ") })
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(string(line), "udp "))
	if err != nil {
		t.Fatal(err)
	}
	return p, ap
}

// ask sends a command to the helper and returns its answer line.
func ask(t *testing.T, p *Process, cmd, prefix string) string {
	t.Helper()
	from := len(p.Lines())
	p.Send(t, cmd)
	_, line := p.WaitLine(t, from, 10*time.Second, cmd, func(l []byte) bool { return strings.HasPrefix(string(l), prefix+" ") })
	return strings.TrimPrefix(string(line), prefix+" ")
}

// TestFabric_BlocksBothDirections checks the partition mechanism with real
// processes: node A (a helper process) reaches node B (an echo server behind
// B's proxies) over TCP and UDP until A and B are blocked, fails while they
// are, and reaches it again after Heal. Traffic from a process that is not a
// node (this test) is never blocked.
func TestFabric_BlocksBothDirections(t *testing.T) {
	f := NewFabric()
	t.Cleanup(f.Close)
	helper, helperUDP := startHelper(t, "nodeA")

	a, err := f.addEndpoint("A")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.addEndpoint("B")
	if err != nil {
		t.Fatal(err)
	}
	upstream := echoServer(t)
	// A is the helper process; its gossip packets come from helperUDP.
	a.setUpstreams(helper.PID(), echoServer(t), helperUDP)
	b.setUpstreams(0, upstream, upstream) // B is no process of its own

	bGossip := b.gossip.addr()
	bHTTP := b.http.addr()
	for _, target := range []string{bGossip, bHTTP} {
		if got := ask(t, helper, "tcp "+target, "tcp"); got != "ok echo:ping" {
			t.Fatalf("A -> B %s before the partition: %q", target, got)
		}
	}
	if got := ask(t, helper, "udp "+bGossip, "udp-reply"); got != "ok echo:ping" {
		t.Fatalf("A -> B udp before the partition: %q", got)
	}

	f.block(a, b)
	for _, target := range []string{bGossip, bHTTP} {
		if got := ask(t, helper, "tcp "+target, "tcp"); !strings.HasPrefix(got, "err") {
			t.Fatalf("A -> B %s during the partition: %q, want an error", target, got)
		}
	}
	if got := ask(t, helper, "udp "+bGossip, "udp-reply"); got != "err timeout" {
		t.Fatalf("A -> B udp during the partition: %q, want a timeout", got)
	}
	// The test process is not a node: it still gets through.
	if err := tcpPing(bHTTP); err != nil {
		t.Fatalf("test -> B during the partition: %v", err)
	}

	f.heal()
	for _, target := range []string{bGossip, bHTTP} {
		if got := ask(t, helper, "tcp "+target, "tcp"); got != "ok echo:ping" {
			t.Fatalf("A -> B %s after heal: %q", target, got)
		}
	}
	if got := ask(t, helper, "udp "+bGossip, "udp-reply"); got != "ok echo:ping" {
		t.Fatalf("A -> B udp after heal: %q", got)
	}
	helper.CloseStdin()
	if err := helper.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("helper exit: %v", err)
	}
}

// TestFabric_BlockCutsOpenConnections: a connection established before the
// partition is closed by it, even one accepted before its sender was known
// to be a node.
func TestFabric_BlockCutsOpenConnections(t *testing.T) {
	f := NewFabric()
	t.Cleanup(f.Close)
	a, _ := f.addEndpoint("A")
	b, _ := f.addEndpoint("B")
	upstream := echoServer(t)
	b.setUpstreams(0, upstream, upstream)
	c, err := net.Dial("tcp", b.http.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the proxy has accepted and registered the pipe.
	testkit.Eventually(t, 5*time.Second, "pipe registered", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(b.http.conns) != 1 {
			return fmt.Errorf("%d pipes", len(b.http.conns))
		}
		return nil
	})
	// Only now does A become this process: the pipe's sender was unknown.
	a.setUpstreams(os.Getpid(), upstream, netip.AddrPort{})
	f.block(a, b)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 10)
	_, err = c.Read(buf)
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read on a cut connection: %v, want EOF/reset", err)
	}
}

func tcpPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "echo:ping\n" {
		return fmt.Errorf("got %q", line)
	}
	return nil
}

func TestSocketOwner_FindsOwnProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := s.RemoteAddr().(*net.TCPAddr).AddrPort()
	server := s.LocalAddr().(*net.TCPAddr).AddrPort()
	pid, found, err := socketOwner(client, server, []int{os.Getpid()})
	if err != nil || !found || pid != os.Getpid() {
		t.Fatalf("socketOwner = %d, %v, %v; want %d, true, nil", pid, found, err, os.Getpid())
	}
	pid, found, err = socketOwner(client, server, nil)
	if err != nil || !found || pid != 0 {
		t.Fatalf("socketOwner without candidates = %d, %v, %v; want 0, true, nil", pid, found, err)
	}
	// A socket that does not exist.
	_, found, _ = socketOwner(netip.MustParseAddrPort("127.0.0.1:1"), server, []int{os.Getpid()})
	if found {
		t.Fatal("found a socket that does not exist")
	}
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"0000000000000000FFFF00000100007F:0050": "[::ffff:127.0.0.1]:80",
		"00000000000000000000000001000000:0016": "[::1]:22",
	} {
		got, err := parseProcAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := parseProcAddr("zz"); err == nil {
		t.Error("parseProcAddr(zz): no error")
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:7171":   "127.0.0.1:7171",
		"[::]:7171":      "[::1]:7171",
		":7171":          "127.0.0.1:7171",
		"127.0.0.5:1234": "127.0.0.5:1234",
	} {
		got, err := dialable(in)
		if err != nil || got.String() != want {
			t.Errorf("dialable(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

func TestReachable(t *testing.T) {
	for _, c := range []struct{ listen, adv, want string }{
		{"0.0.0.0:0", "10.1.2.3:7171", "127.0.0.1:7171"},
		{":0", "10.1.2.3:7171", "127.0.0.1:7171"},
		{"[::]:0", "[fd00::1]:7171", "[::1]:7171"},
		{"127.0.0.1:0", "127.0.0.1:4000", "127.0.0.1:4000"},
	} {
		got, err := reachable(c.listen, c.adv)
		if err != nil || got.String() != c.want {
			t.Errorf("reachable(%q, %q) = %v, %v; want %s", c.listen, c.adv, got, err, c.want)
		}
	}
}

func TestEventually_ReportsElapsedAndLastError(t *testing.T) {
	n := 0
	d := testkit.Eventually(t, 5*time.Second, "third try", func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 || d <= 0 {
		t.Fatalf("tries %d, elapsed %s", n, d)
	}
	_, err := testkit.Within(30*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Fatalf("Within: %v, want the last error", err)
	}
}

// TestFabric_RefusesUnknownSenders: a connection whose sender is neither a
// node nor the test or one of its helpers (here: a process the harness did
// not start) is refused, so what a dying node left in the kernel's accept
// queue never reaches a peer.
func TestFabric_RefusesUnknownSenders(t *testing.T) {
	f := NewFabric()
	t.Cleanup(f.Close)
	b, _ := f.addEndpoint("B")
	upstream := echoServer(t)
	b.setUpstreams(0, upstream, upstream)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HARNESS_HELPER=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	sc.Scan() // its udp line
	fmt.Fprintf(stdin, "tcp %s\n", b.http.addr())
	if !sc.Scan() {
		t.Fatal("helper died")
	}
	if got := sc.Text(); !strings.HasPrefix(got, "tcp err") {
		t.Fatalf("unknown sender got through: %q", got)
	}
	// The test process itself is known and gets through.
	if err := tcpPing(b.http.addr()); err != nil {
		t.Fatalf("test process: %v", err)
	}
}

// A relay refuses (accepts and closes) until pointed, then forwards; Close
// cuts what is open.
func TestRelay_RefusesUntilPointed(t *testing.T) {
	r := NewRelay(t)
	if err := tcpPing(r.Addr()); err == nil {
		t.Fatal("an unpointed relay forwarded a connection")
	}
	r.Point(echoServer(t).String())
	if err := tcpPing(r.Addr()); err != nil {
		t.Fatalf("pointed relay: %v", err)
	}
	r.Close()
	if err := tcpPing(r.Addr()); err == nil {
		t.Fatal("a closed relay forwarded a connection")
	}
}
