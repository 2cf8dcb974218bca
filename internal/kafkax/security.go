package kafkax

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Security is how cdcflow's Kafka clients protect their connections: TLS,
// optionally with a client certificate, and SASL authentication. Conn
// embeds it, so every program that reads KAFKA_BROKERS reads these too.
type Security struct {
	TLS                   bool   `envconfig:"KAFKA_TLS" default:"false" desc:"connect to the brokers over TLS"`
	TLSCAFile             string `envconfig:"KAFKA_TLS_CA_FILE" desc:"PEM file of the CAs that sign the brokers' certificates (default: the system's)"`
	TLSCertFile           string `envconfig:"KAFKA_TLS_CERT_FILE" desc:"PEM file of a client certificate to present (with KAFKA_TLS_KEY_FILE)"`
	TLSKeyFile            string `envconfig:"KAFKA_TLS_KEY_FILE" desc:"PEM file of the client certificate's private key"`
	TLSInsecureSkipVerify bool   `envconfig:"KAFKA_TLS_INSECURE_SKIP_VERIFY" default:"false" desc:"do not verify the brokers' certificates (anyone on the path can read and change the traffic: for tests only)"`
	SASLMechanism         string `envconfig:"KAFKA_SASL_MECHANISM" desc:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (no SASL when empty)"`
	SASLUsername          string `envconfig:"KAFKA_SASL_USERNAME" desc:"SASL user name"`
	SASLPassword          string `envconfig:"KAFKA_SASL_PASSWORD" secret:"true" desc:"SASL password (or KAFKA_SASL_PASSWORD_FILE: a file holding it)"`
}

// Mechanisms are the SASL mechanisms cdcflow speaks.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// usesTLS reports whether connections are made over TLS: KAFKA_TLS, or
// any setting that only means something with TLS.
func (s Security) usesTLS() bool {
	return s.TLS || s.TLSCAFile != "" || s.TLSCertFile != "" || s.TLSKeyFile != "" || s.TLSInsecureSkipVerify
}

// Validate reports the first setting that is wrong, naming its variable:
// an unknown mechanism, a SASL user without password, a CA file that does
// not parse, a client certificate without its key.
func (s Security) Validate() (variable string, err error) {
	if _, variable, err = s.tlsConfig(); err != nil {
		return variable, err
	}
	_, variable, err = s.mechanism()
	return variable, err
}

// tlsConfig returns the TLS configuration of the connections, nil without TLS.
func (s Security) tlsConfig() (*tls.Config, string, error) {
	if !s.usesTLS() {
		return nil, "", nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: s.TLSInsecureSkipVerify} //nolint:gosec // documented as for tests only
	if s.TLSCAFile != "" {
		pem, err := os.ReadFile(s.TLSCAFile)
		if err != nil {
			return nil, "KAFKA_TLS_CA_FILE", err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, "KAFKA_TLS_CA_FILE", errors.New("holds no PEM certificate")
		}
	}
	switch {
	case s.TLSCertFile != "" && s.TLSKeyFile == "":
		return nil, "KAFKA_TLS_KEY_FILE", errors.New("want the key of KAFKA_TLS_CERT_FILE")
	case s.TLSKeyFile != "" && s.TLSCertFile == "":
		return nil, "KAFKA_TLS_CERT_FILE", errors.New("want the certificate of KAFKA_TLS_KEY_FILE")
	case s.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			return nil, "KAFKA_TLS_CERT_FILE", fmt.Errorf("with KAFKA_TLS_KEY_FILE: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, "", nil
}

// mechanism returns the SASL mechanism, nil without SASL.
func (s Security) mechanism() (sasl.Mechanism, string, error) {
	switch {
	case s.SASLMechanism == "" && (s.SASLUsername != "" || s.SASLPassword != ""):
		return nil, "KAFKA_SASL_MECHANISM", errors.New("want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
	case s.SASLMechanism == "":
		return nil, "", nil
	case s.SASLUsername == "":
		return nil, "KAFKA_SASL_USERNAME", fmt.Errorf("want a user name with KAFKA_SASL_MECHANISM=%s", s.SASLMechanism)
	case s.SASLPassword == "":
		return nil, "KAFKA_SASL_PASSWORD", fmt.Errorf("want a password with KAFKA_SASL_MECHANISM=%s", s.SASLMechanism)
	}
	var (
		m   sasl.Mechanism
		err error
	)
	switch strings.ToUpper(s.SASLMechanism) {
	case "PLAIN":
		m = plain.Mechanism{Username: s.SASLUsername, Password: s.SASLPassword}
	case "SCRAM-SHA-256":
		m, err = scram.Mechanism(scram.SHA256, s.SASLUsername, s.SASLPassword)
	case "SCRAM-SHA-512":
		m, err = scram.Mechanism(scram.SHA512, s.SASLUsername, s.SASLPassword)
	default:
		return nil, "KAFKA_SASL_MECHANISM", errors.New("want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	}
	if err != nil {
		return nil, "KAFKA_SASL_USERNAME", err // SASLprep refused the user name or password
	}
	return m, "", nil
}

// Cluster is how cdcflow reaches a Kafka cluster: its brokers, and the
// dialer (of readers and consumer groups) and transport (of writers and
// clients) that connect to them with the configured TLS and SASL.
type Cluster struct {
	Brokers   []string
	Dialer    *kafka.Dialer
	Transport *kafka.Transport

	sec Security
}

// Cluster returns the cluster of c's brokers with c's security settings.
// The error names the variable of a setting that is wrong.
func (c Conn) Cluster() (*Cluster, error) {
	tlsCfg, variable, err := c.tlsConfig()
	if err == nil {
		var m sasl.Mechanism
		if m, variable, err = c.mechanism(); err == nil {
			return newCluster(c.Brokers, c.Security, tlsCfg, m), nil
		}
	}
	return nil, fmt.Errorf("invalid %s: %w", variable, err)
}

// Connect returns the cluster of c once its brokers accepted c's
// credentials and TLS settings (see Check), within 15 s: what they refuse
// stops a program at once, in one line.
func (c Conn) Connect(ctx context.Context) (*Cluster, error) {
	kc, err := c.Cluster()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := kc.Check(cctx); err != nil {
		return nil, err
	}
	return kc, nil
}

// Plain returns the cluster at brokers, reached without TLS nor SASL.
func Plain(brokers []string) *Cluster {
	return newCluster(brokers, Security{}, nil, nil)
}

func newCluster(brokers []string, sec Security, tlsCfg *tls.Config, m sasl.Mechanism) *Cluster {
	return &Cluster{
		Brokers:   brokers,
		Dialer:    &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: tlsCfg, SASLMechanism: m},
		Transport: &kafka.Transport{TLS: tlsCfg, SASL: m},
		sec:       sec,
	}
}

// Check connects to the brokers, one after the other until one answers,
// and reports what retrying cannot fix as one error that says what to
// change: the brokers refused the SASL credentials or mechanism, or TLS
// failed (a certificate not trusted, a broker that does not speak TLS).
// Brokers that cannot be reached are not its concern: the programs wait
// for them.
func (c *Cluster) Check(ctx context.Context) error {
	for _, b := range c.Brokers {
		conn, err := c.Dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			return nil
		}
		if fatal := c.explain(b, err); fatal != nil {
			return fatal
		}
	}
	return nil
}

// explain returns err as one line saying which setting to change, or nil
// when err may pass by itself (a broker not reachable, a timeout).
func (c *Cluster) explain(broker string, err error) error {
	var (
		kerr    kafka.Error
		unknown x509.UnknownAuthorityError
		verify  *tls.CertificateVerificationError
		host    x509.HostnameError
		header  tls.RecordHeaderError
		alert   tls.AlertError
	)
	who := fmt.Sprintf("user %q", c.sec.SASLUsername)
	switch {
	case errors.As(err, &kerr) && kerr == kafka.SASLAuthenticationFailed:
		return fmt.Errorf("connect to Kafka at %s: SASL %s authentication failed for %s: check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (%v)",
			broker, strings.ToUpper(c.sec.SASLMechanism), who, err)
	case errors.As(err, &kerr) && (kerr == kafka.UnsupportedSASLMechanism || kerr == kafka.IllegalSASLState):
		return fmt.Errorf("connect to Kafka at %s: SASL %s authentication failed for %s: the broker does not accept KAFKA_SASL_MECHANISM=%s (%v)",
			broker, strings.ToUpper(c.sec.SASLMechanism), who, c.sec.SASLMechanism, err)
	case c.sec.SASLMechanism != "" && strings.Contains(err.Error(), "SASL"):
		return fmt.Errorf("connect to Kafka at %s: SASL %s authentication failed for %s: %v", broker, strings.ToUpper(c.sec.SASLMechanism), who, err)
	case errors.As(err, &unknown), errors.As(err, &verify), errors.As(err, &host):
		return fmt.Errorf("connect to Kafka at %s: TLS: the broker's certificate is not trusted: %v (check KAFKA_TLS_CA_FILE, and that KAFKA_BROKERS names the host the certificate is for)",
			broker, err)
	case errors.As(err, &header):
		return fmt.Errorf("connect to Kafka at %s: TLS: the broker does not speak TLS on this port (KAFKA_TLS): %v", broker, err)
	case errors.As(err, &alert):
		return fmt.Errorf("connect to Kafka at %s: TLS: the broker refused the connection: %v (does it want a client certificate, KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE?)",
			broker, err)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return fmt.Errorf("connect to Kafka at %s: TLS: %v", broker, err)
	}
	return nil
}
