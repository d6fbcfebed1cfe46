package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// certReloader serves the HTTPS listener's certificate and reads it again
// when the certificate or key file changes (modification time or size; a
// symlink swap, as Kubernetes does for a mounted Secret, changes both).
// The files are checked at each handshake, which with keep-alive is rare;
// a pair that fails to load is logged once and the previous one stays.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex // guards the fields below
	cert   *tls.Certificate
	loaded [2]fileStamp // of the pair in cert
	failed [2]fileStamp // of the last pair that did not load

	reloads *prometheus.CounterVec // result: ok, error
	expiry  prometheus.GaugeFunc
}

type fileStamp struct{ mod, size int64 }

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime().UnixNano(), fi.Size()}, nil
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "discovery_tls_reloads_total",
		Help: "Reloads of the HTTPS certificate after its files changed, by result (ok, error: the previous certificate stays).",
	}, []string{"result"})
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("error")
	r.expiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "discovery_tls_cert_expiry_timestamp_seconds",
		Help: "NotAfter of the HTTPS certificate in use, as a Unix time.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.cert.Leaf.NotAfter.Unix())
	})
	stamps, cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded = cert, stamps
	log.Info("https certificate loaded", "cert_file", certFile, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return r, nil
}

func (r *certReloader) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{r.reloads, r.expiry} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// load reads the pair with the stamps it had just before.
func (r *certReloader) load() ([2]fileStamp, *tls.Certificate, error) {
	var st [2]fileStamp
	var err error
	if st[0], err = stampOf(r.certFile); err != nil {
		return st, nil, fmt.Errorf("http.tls.cert_file: %w", err)
	}
	if st[1], err = stampOf(r.keyFile); err != nil {
		return st, nil, fmt.Errorf("http.tls.key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return st, nil, fmt.Errorf("http.tls.cert_file, http.tls.key_file: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return st, nil, fmt.Errorf("http.tls.cert_file: %w", err)
		}
	}
	return st, &cert, nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var now [2]fileStamp
	var err1, err2 error
	now[0], err1 = stampOf(r.certFile)
	now[1], err2 = stampOf(r.keyFile)
	if err := errors.Join(err1, err2); err != nil || now == r.loaded || now == r.failed {
		// A file missing for a moment (being replaced) or a pair that
		// already failed: keep serving the one in use.
		return r.cert, nil
	}
	st, cert, err := r.load()
	if err != nil {
		r.failed = now
		r.reloads.WithLabelValues("error").Inc()
		r.log.Error("https certificate reload failed; the previous one stays in use", "err", err)
		return r.cert, nil
	}
	r.cert, r.loaded, r.failed = cert, st, [2]fileStamp{}
	r.reloads.WithLabelValues("ok").Inc()
	r.log.Info("https certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return r.cert, nil
}
