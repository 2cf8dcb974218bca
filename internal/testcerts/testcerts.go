// Package testcerts makes the certificates of TLS tests: a CA, a server
// certificate it signs for 127.0.0.1 and localhost, and a client
// certificate, as PEM files and as tls.Config values.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Set is a CA and the certificates it signed, each in PEM files under a
// test's temporary directory.
type Set struct {
	CAFile                        string // the CA's certificate
	ServerCert                    tls.Certificate
	ClientCertFile, ClientKeyFile string
	Pool                          *x509.CertPool // holds the CA

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	dir   string
}

// New returns a new CA (named name) and its certificates.
func New(t testing.TB, name string) *Set {
	t.Helper()
	s := &Set{dir: t.TempDir()}
	s.caKey = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.caKey.PublicKey, s.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if s.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	s.CAFile = s.write(t, "ca.pem", "CERTIFICATE", der)
	s.Pool = x509.NewCertPool()
	s.Pool.AddCert(s.ca)

	certPEM, keyPEM := s.sign(t, 2, "server", x509.ExtKeyUsageServerAuth)
	if s.ServerCert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM = s.sign(t, 3, "client", x509.ExtKeyUsageClientAuth)
	s.ClientCertFile = s.writePEM(t, "client.pem", certPEM)
	s.ClientKeyFile = s.writePEM(t, "client-key.pem", keyPEM)
	return s
}

// Server returns the TLS configuration of a server with the server
// certificate; with clientAuth, clients must present a certificate the CA
// signed.
func (s *Set) Server(clientAuth bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{s.ServerCert}, MinVersion: tls.VersionTLS12}
	if clientAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = s.Pool
	}
	return cfg
}

func (s *Set) sign(t testing.TB, serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, &key.PublicKey, s.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (s *Set) write(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	return s.writePEM(t, name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func (s *Set) writePEM(t testing.TB, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
