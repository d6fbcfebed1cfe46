package loadgen

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// The pieces of the CPU report: a listening socket is found in
// /proc/net/tcp by its port, and process CPU times are read.
func TestCPU_ProcPieces(t *testing.T) {
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	inodes := map[string]bool{}
	if err := listeningInodes("/proc/net/tcp", net.ParseIP("127.0.0.1"), port, inodes); err != nil || len(inodes) != 1 {
		t.Fatalf("inodes %v, %v", inodes, err)
	}
	if _, err := pidListening("127.0.0.1:" + strconv.Itoa(port)); err == nil {
		t.Fatal("our own listener counted as a node process")
	}
	if s, err := processCPU(os.Getpid()); err != nil || s < 0 {
		t.Fatalf("processCPU: %v %v", s, err)
	}
	if s, err := selfCPU(); err != nil || s <= 0 {
		t.Fatalf("selfCPU: %v %v", s, err)
	}
	if ip := procIP("0100007F"); !ip.Equal(net.ParseIP("127.0.0.1")) {
		t.Fatalf("procIP: %v", ip)
	}
}

// processRSS reads VmRSS in bytes: this process's is more than its heap.
func TestProcessRSS(t *testing.T) {
	rss, err := processRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if rss < int64(ms.HeapInuse) || rss > 64<<30 {
		t.Fatalf("rss %d B, heap in use %d B", rss, ms.HeapInuse)
	}
	if _, err := processRSS(-1); err == nil {
		t.Fatal("no error for a missing process")
	}
}
