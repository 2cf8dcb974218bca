package kafkax_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/testcerts"
)

// secureBroker starts a broker that takes TLS only, with a certificate of
// certs' CA (a client certificate too, with clientAuth), and SASL with the
// users alice (SCRAM-SHA-256), bob (PLAIN) and carol (SCRAM-SHA-512).
func secureBroker(t *testing.T, certs *testcerts.Set, clientAuth bool, topic string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic),
		kfake.TLS(certs.Server(clientAuth)), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "alice", "alice-secret"),
		kfake.Superuser("PLAIN", "bob", "bob-secret"),
		kfake.Superuser("SCRAM-SHA-512", "carol", "carol-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// TestTLSAndSASLRoundTrip: with each mechanism over TLS, a writer's
// message is read back by a partition reader (the starter's) and by the
// chunk reader (the worker's), and the newest messages are found (capture's).
func TestTLSAndSASLRoundTrip(t *testing.T) {
	certs := testcerts.New(t, "kafka-ca")
	for _, c := range []struct {
		name       string
		clientAuth bool
		sec        kafkax.Security
	}{
		{"SCRAM-SHA-256", false, kafkax.Security{TLS: true, TLSCAFile: certs.CAFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: "alice", SASLPassword: "alice-secret"}},
		{"PLAIN", false, kafkax.Security{TLS: true, TLSCAFile: certs.CAFile, SASLMechanism: "PLAIN", SASLUsername: "bob", SASLPassword: "bob-secret"}},
		{"SCRAM-SHA-512 and a client certificate", true, kafkax.Security{TLS: true, TLSCAFile: certs.CAFile,
			TLSCertFile: certs.ClientCertFile, TLSKeyFile: certs.ClientKeyFile,
			SASLMechanism: "SCRAM-SHA-512", SASLUsername: "carol", SASLPassword: "carol-secret"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn := kafkax.Conn{Brokers: secureBroker(t, certs, c.clientAuth, "changes"), Topic: "changes", Security: c.sec}
			if name, err := conn.Validate(); err != nil {
				t.Fatalf("Validate: %s: %v", name, err)
			}
			kc, err := conn.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			if err := kc.Check(ctx); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if err := kc.Ping(ctx, "changes"); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			w := kc.Writer("changes", kafkax.WriterOptions{})
			defer w.Close()
			if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("hello " + c.name)}); err != nil {
				t.Fatalf("write: %v", err)
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Dialer: kc.Dialer, Topic: "changes", Partition: 0, MaxWait: 100 * time.Millisecond})
			defer r.Close()
			m, err := r.FetchMessage(ctx)
			if err != nil || string(m.Value) != "hello "+c.name {
				t.Fatalf("read %q, %v; want the message written", m.Value, err)
			}
			msgs, err := kc.ChunkReader().Read(ctx, "changes", 0, []int64{0})
			if err != nil || len(msgs) != 1 || string(msgs[0].Value) != "hello "+c.name {
				t.Fatalf("chunk reader read %v, %v", msgs, err)
			}
			last, err := kc.LastMessages(ctx, "changes", 1)
			if err != nil || len(last) != 1 {
				t.Fatalf("LastMessages: %v, %v", last, err)
			}
		})
	}
}

// TestCheckExplains: credentials or certificates the broker refuses are
// one line that says what failed and which variables to look at.
func TestCheckExplains(t *testing.T) {
	certs := testcerts.New(t, "kafka-ca")
	other := testcerts.New(t, "another-ca")
	brokers := secureBroker(t, certs, false, "changes")
	for _, c := range []struct {
		name string
		sec  kafkax.Security
		want []string
	}{
		{"wrong password", kafkax.Security{TLS: true, TLSCAFile: certs.CAFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: "alice", SASLPassword: "wrong"},
			[]string{"SASL SCRAM-SHA-256 authentication failed for user \"alice\"", "KAFKA_SASL_PASSWORD"}},
		{"unknown user", kafkax.Security{TLS: true, TLSCAFile: certs.CAFile, SASLMechanism: "PLAIN", SASLUsername: "mallory", SASLPassword: "x"},
			[]string{"SASL PLAIN authentication failed for user \"mallory\""}},
		{"untrusted CA", kafkax.Security{TLS: true, TLSCAFile: other.CAFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: "alice", SASLPassword: "alice-secret"},
			[]string{"TLS: the broker's certificate is not trusted", "KAFKA_TLS_CA_FILE"}},
		{"system CAs", kafkax.Security{TLS: true, SASLMechanism: "SCRAM-SHA-256", SASLUsername: "alice", SASLPassword: "alice-secret"},
			[]string{"TLS: the broker's certificate is not trusted"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			kc, err := kafkax.Conn{Brokers: brokers, Topic: "changes", Security: c.sec}.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			err = kc.Check(ctx)
			if err == nil {
				t.Fatal("Check passed")
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Check: %q, want it to say %q", msg, w)
				}
			}
			t.Log(msg)
			if strings.Contains(msg, "\n") || strings.Contains(msg, c.sec.SASLPassword) {
				t.Errorf("Check: %q, want one line without the password", msg)
			}
		})
	}
	// A broker that is not there is not Check's concern: programs wait.
	kc, _ := kafkax.Conn{Brokers: []string{"127.0.0.1:1"}, Topic: "t"}.Cluster()
	if err := kc.Check(context.Background()); err != nil {
		t.Fatalf("Check of a broker not listening: %v, want nil", err)
	}
}

// TestSecurityValidate: each wrong setting is named.
func TestSecurityValidate(t *testing.T) {
	certs := testcerts.New(t, "kafka-ca")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sec      kafkax.Security
		variable string
		want     string
	}{
		{kafkax.Security{SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: "p"}, "KAFKA_SASL_MECHANISM", "want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
		{kafkax.Security{SASLMechanism: "PLAIN", SASLPassword: "p"}, "KAFKA_SASL_USERNAME", "want a user name"},
		{kafkax.Security{SASLMechanism: "SCRAM-SHA-256", SASLUsername: "u"}, "KAFKA_SASL_PASSWORD", "want a password"},
		{kafkax.Security{SASLUsername: "u", SASLPassword: "p"}, "KAFKA_SASL_MECHANISM", "want PLAIN"},
		{kafkax.Security{TLS: true, TLSCAFile: garbage}, "KAFKA_TLS_CA_FILE", "holds no PEM certificate"},
		{kafkax.Security{TLS: true, TLSCAFile: garbage + ".missing"}, "KAFKA_TLS_CA_FILE", "no such file"},
		{kafkax.Security{TLS: true, TLSCertFile: certs.ClientCertFile}, "KAFKA_TLS_KEY_FILE", "want the key of KAFKA_TLS_CERT_FILE"},
		{kafkax.Security{TLS: true, TLSKeyFile: certs.ClientKeyFile}, "KAFKA_TLS_CERT_FILE", "want the certificate"},
		{kafkax.Security{TLS: true, TLSCertFile: certs.ClientCertFile, TLSKeyFile: garbage}, "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE"},
	} {
		variable, err := c.sec.Validate()
		if variable != c.variable || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %s, %v; want %s and %q", c.sec, variable, err, c.variable, c.want)
		}
	}
	for _, ok := range []kafkax.Security{{}, {TLS: true}, {SASLMechanism: "scram-sha-512", SASLUsername: "u", SASLPassword: "p"}} {
		if variable, err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %s, %v; want nil", ok, variable, err)
		}
	}
}
