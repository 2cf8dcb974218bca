package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/workflows"
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

const (
	goodEvent = `{"action_id":%d,"table":"public.employees","op":"insert","key":{"emp_id":%d},"after":{"emp_id":%d,"first_name":"Ada"},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`
)

func goodEvents(ids ...int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = sprintf(goodEvent, id, id, id)
	}
	return out
}

// TestUndecodableAndRejectedEvents: a malformed message is counted as failed
// and the rest of its batch applied; a batch with an event for a table off
// the allowlist fails its workflow with a non-retryable TableNotAllowed error
// and writes nothing.
func TestUndecodableAndRejectedEvents(t *testing.T) {
	p := newPipeline(t)
	p.start("worker")
	p.start("starter", "CDCFLOW_BATCH_MAX_WAIT=300ms")

	p.produceRaw(append(goodEvents(1, 2), `{"action_id":3,"table":`, sprintf(goodEvent, 4, 4, 4))...)
	p.waitApplied(3)
	sums := p.summaries(4)
	var okID string
	for id, s := range sums {
		okID = id
		if s != (workflows.BatchSummary{Events: 4, Applied: 3, Failed: 1}) {
			t.Fatalf("summary %+v, want 3 applied and 1 failed", s)
		}
	}

	p.produceRaw(sprintf(goodEvent, 5, 5, 5),
		`{"action_id":6,"table":"public.payroll","op":"delete","key":{"id":1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`)
	failedID := p.waitForFailure()
	var appErr *temporal.ApplicationError
	werr := p.temporal.GetWorkflow(context.Background(), failedID, "").Get(context.Background(), nil)
	if !errors.As(werr, &appErr) || appErr.Type() != applier.ErrTypeTableNotAllowed {
		t.Fatalf("workflow error %v, want type %s", werr, applier.ErrTypeTableNotAllowed)
	}
	if !strings.Contains(appErr.Error(), `action_id 6: table "public.payroll" is not on the allowlist`) {
		t.Fatalf("workflow error %q does not name the event and table", appErr.Error())
	}
	if got := p.count(`SELECT count(*) FROM cdcflow.processed_events`); got != 3 {
		t.Fatalf("%d processed events, want 3: the rejected batch must write nothing", got)
	}
	if *updateHistories {
		p.saveHistory(okID, "apply_batch_poison.json")
		p.saveHistory(failedID, "apply_batch_rejected.json")
	}
}

// waitForFailure returns the ID of the first workflow on the pipeline's task
// queue that failed.
func (p *pipeline) waitForFailure() string {
	var id string
	eventually(p.t, time.Minute, "a failed workflow", func() (bool, string) {
		resp, err := p.temporal.ListWorkflow(context.Background(), listFailed(p.taskQueue))
		if err != nil {
			return false, err.Error()
		}
		if len(resp.Executions) == 0 {
			return false, "none failed yet"
		}
		id = resp.Executions[0].Execution.WorkflowId
		return true, ""
	})
	return id
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
