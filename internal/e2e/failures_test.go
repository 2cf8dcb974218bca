package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// TestInvalidConfigurationExits: one line naming the variable, exit status 1,
// and nothing started.
func TestInvalidConfigurationExits(t *testing.T) {
	for _, c := range []struct{ prog, env, want string }{
		{"starter", "CDCFLOW_BATCH_MAX_EVENTS=lots", `starter: invalid CDCFLOW_BATCH_MAX_EVENTS="lots": want int`},
		{"worker", "CDCFLOW_TABLES=x.y.z", `worker: invalid CDCFLOW_TABLES="x.y.z": want schema.table, got "x.y.z"`},
		// No table is replicated unless named: there is no default.
		{"worker", "CDCFLOW_TABLES=", `worker: invalid CDCFLOW_TABLES="": want at least one table (schema.table, comma-separated)`},
		{"capture", "CDCFLOW_TABLES=", `capture: invalid CDCFLOW_TABLES="": want at least one table (schema.table, comma-separated)`},
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

// TestNullAndEmptyValuesAreParked: Kafka records with a null or an empty
// value are parked as InvalidEvent, and the changes around them are applied.
func TestNullAndEmptyValuesAreParked(t *testing.T) {
	p := newPipeline(t)
	p.start("worker")
	p.start("starter", "CDCFLOW_BATCH_MAX_WAIT=1s")
	w := kafkax.NewWriter(p.brokers, p.topic, kafkax.WriterOptions{})
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })
	defer w.Close()
	err := w.WriteMessages(context.Background(),
		kafka.Message{Value: []byte(insertEvent(1, 1, 10, demo.Table))},
		kafka.Message{Value: nil},
		kafka.Message{Value: []byte{}},
		kafka.Message{Value: []byte(insertEvent(2, 2, 20, demo.Table))})
	if err != nil {
		t.Fatal(err)
	}
	p.waitApplied(2)
	want := map[string]deadLetterRow{
		cdc.PoisonDeadLetterID(p.topic, 0, 1, []byte{}): {class: cdc.ClassInvalidEvent, state: "parked", offset: 1},
		cdc.PoisonDeadLetterID(p.topic, 0, 2, []byte{}): {class: cdc.ClassInvalidEvent, state: "parked", offset: 2},
	}
	eventually(t, time.Minute, "both records parked", func() (bool, string) {
		got := p.deadLetters()
		for id, row := range got {
			if !strings.HasSuffix(row.group, "-undecodable-InvalidEvent") {
				return false, fmt.Sprintf("%s in group %q", id, row.group)
			}
			row.group = ""
			got[id] = row
		}
		return cmp.Diff(want, got, cmp.AllowUnexported(deadLetterRow{})) == "", fmt.Sprint(got)
	})
	tot := total(p.summaries(4))
	if diff := cmp.Diff(cdc.BatchSummary{Events: 4, Counts: cdc.Counts{Applied: 2}, Failed: 2}, tot); diff != "" {
		t.Fatalf("batches (-want +got):\n%s", diff)
	}
}
