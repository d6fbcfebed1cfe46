package syncup

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// keyring holds the key material of the cluster secret: cluster.secret (the
// primary: gossip is encrypted with it and peer requests are signed with
// it) and cluster.accept_secrets (also accepted, during a rotation). Each
// secret yields two keys by HMAC-SHA256 derivation, one for memberlist's
// AES-GCM and one for request signatures, so neither use weakens the other.
type keyring struct {
	gossip *memberlist.Keyring
	// sign are the request-signing keys, primary first.
	sign []signKey
}

// signKey is one request-signing key and its public id (which key signed
// a request travels with it, so a verifier holding several knows which to
// use without trying them all).
type signKey struct {
	id  string
	key []byte
}

// newKeyring builds the keyring of cfg; nil when no secret is configured.
func newKeyring(cfg Config) (*keyring, error) {
	secrets, err := cfg.secretKeys()
	if err != nil || len(secrets) == 0 {
		return nil, err
	}
	kr := &keyring{}
	var gossipKeys [][]byte
	for _, s := range secrets {
		gossipKeys = append(gossipKeys, derive(s, "discovery gossip v1", len(s)))
		k := derive(s, "discovery peer request v1", 32)
		sum := sha256.Sum256(k)
		kr.sign = append(kr.sign, signKey{id: hex.EncodeToString(sum[:6]), key: k})
	}
	if kr.gossip, err = memberlist.NewKeyring(gossipKeys[1:], gossipKeys[0]); err != nil {
		return nil, fmt.Errorf("cluster.secret: %w", err)
	}
	return kr, nil
}

// derive returns n bytes of HMAC-SHA256(secret, label) (n ≤ 32).
func derive(secret []byte, label string, n int) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)[:n]
}

// secretKeys decodes cluster.secret and cluster.accept_secrets (base64 of
// 16, 24 or 32 bytes each), primary first; none when no secret is set.
func (c Config) secretKeys() ([][]byte, error) {
	if c.Secret == "" {
		return nil, nil
	}
	var out [][]byte
	for i, s := range append([]string{c.Secret}, c.AcceptSecrets...) {
		key := "cluster.secret"
		if i > 0 {
			key = fmt.Sprintf("cluster.accept_secrets[%d]", i-1)
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s: not valid base64: %w", key, err)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%s: must decode to 16, 24 or 32 bytes, got %d", key, len(k))
		}
		out = append(out, k)
	}
	return out, nil
}
