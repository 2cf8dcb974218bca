package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/segmentio/kafka-go"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

var updateHistories = flag.Bool("update-histories", false, "rewrite the workflow histories in workflows/testdata")

// produceRaw writes values, in order, to partition 0.
func (p *pipeline) produceRaw(values ...string) {
	p.t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(p.brokers...), Topic: p.topic, RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Value: []byte(v)}
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pipeline) saveHistory(workflowID, file string) {
	p.t.Helper()
	ctx := context.Background()
	it := p.temporal.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			p.t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&h)
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(moduleRoot(), "workflows", "testdata", file)
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote %s", path)
}

// TestInvalidConfigurationExits: one line naming the variable, exit status 1,
// and nothing started.
func TestInvalidConfigurationExits(t *testing.T) {
	for _, c := range []struct{ prog, env, want string }{
		{"starter", "CDCFLOW_BATCH_MAX_EVENTS=lots", `starter: invalid CDCFLOW_BATCH_MAX_EVENTS="lots": want int`},
		{"worker", "CDCFLOW_TABLES=x.y.z", `worker: invalid CDCFLOW_TABLES="x.y.z": want schema.table, got "x.y.z"`},
	} {
		cmd := exec.Command(binary(t, c.prog))
		cmd.Env = append(os.Environ(), c.env)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("%s with %s: %v, want exit status 1", c.prog, c.env, err)
		}
		if got := stderr.String(); got != c.want+"\n" {
			t.Fatalf("%s with %s printed %q, want the single line %q", c.prog, c.env, got, c.want)
		}
	}
}
