//go:build !linux

package loadgen

import "errors"

var errNoProc = errors.New("process CPU times and memory need Linux /proc")

func processCPU(int) (float64, error)  { return 0, errNoProc }
func selfCPU() (float64, error)        { return 0, errNoProc }
func processRSS(int) (int64, error)    { return 0, errNoProc }
func pidListening(string) (int, error) { return 0, errNoProc }
