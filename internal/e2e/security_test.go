package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcflow/cdcflow/internal/testcerts"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestRefusedKafkaCredentialsExit: capture, starter and worker given a
// password, or a CA, the brokers refuse stop at start with exit status 1
// and one line saying what failed (mechanism and user, or the certificate),
// not a stream of retries; the password is not printed.
func TestRefusedKafkaCredentialsExit(t *testing.T) {
	certs := testcerts.New(t, "kafka-ca")
	other := testcerts.New(t, "another-ca")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "changes"),
		kfake.TLS(certs.Server(false)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "alice", "alice-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	tmp := testenv.TemporalServer(t)
	common := []string{"KAFKA_BROKERS=" + broker, "CDCFLOW_TOPIC=changes", "CDCFLOW_TABLES=public.employees",
		"TEMPORAL_ADDRESS=" + tmp.Address, "TEMPORAL_NAMESPACE=" + tmp.Namespace, "CDCFLOW_TASK_QUEUE=refused",
		// Not reached: the Kafka check comes first.
		"CDCFLOW_SOURCE_DSN=postgres://nobody@127.0.0.1:1/none?sslmode=disable",
		"CDCFLOW_DEST_DSN=postgres://nobody@127.0.0.1:1/none?sslmode=disable"}
	wrongPassword := []string{"KAFKA_TLS_CA_FILE=" + certs.CAFile, "KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
		"KAFKA_SASL_USERNAME=alice", "KAFKA_SASL_PASSWORD=not-alices-password"}
	untrusted := []string{"KAFKA_TLS=true", "KAFKA_TLS_CA_FILE=" + other.CAFile, "KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
		"KAFKA_SASL_USERNAME=alice", "KAFKA_SASL_PASSWORD=alice-secret"}
	for _, tc := range []struct {
		prog string
		env  []string
		want string
	}{
		{"capture", wrongPassword, `capture: connect to Kafka at ` + broker + `: SASL SCRAM-SHA-256 authentication failed for user "alice": check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD`},
		{"starter", wrongPassword, `starter: connect to Kafka at ` + broker + `: SASL SCRAM-SHA-256 authentication failed for user "alice": check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD`},
		{"worker", wrongPassword, `worker: connect to Kafka at ` + broker + `: SASL SCRAM-SHA-256 authentication failed for user "alice": check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD`},
		{"capture", untrusted, `capture: connect to Kafka at ` + broker + `: TLS: the broker's certificate is not trusted`},
		{"starter", untrusted, `starter: connect to Kafka at ` + broker + `: TLS: the broker's certificate is not trusted`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, binary(t, tc.prog))
		cmd.Env = append(append(os.Environ(), common...), tc.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("%s: %v, want exit status 1; stderr:\n%s", tc.prog, err, stderr.String())
		}
		out := stdout.String() + stderr.String()
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
			t.Errorf("%s printed %q, want the single line %q...", tc.prog, out, tc.want)
		}
		if strings.Contains(out, "not-alices-password") || strings.Contains(out, "alice-secret") {
			t.Errorf("%s printed the password: %q", tc.prog, out)
		}
		t.Logf("%s: %s", tc.prog, strings.TrimSpace(out))
	}
}
