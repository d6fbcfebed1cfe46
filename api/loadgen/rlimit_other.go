//go:build !unix

package loadgen

// raiseNoFile: no file-descriptor limit to raise on this platform.
func raiseNoFile(uint64) (string, error) { return "", nil }
