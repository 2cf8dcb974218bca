package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/migrations"
)

// temporalCLI runs the real temporal CLI against the pipeline's server.
func (p *pipeline) temporalCLI(args ...string) (string, error) {
	bin, err := localsvc.TemporalBinary()
	if err != nil {
		p.t.Fatal(err)
	}
	args = append(args, "--address", p.env["TEMPORAL_ADDRESS"], "--namespace", p.env["TEMPORAL_NAMESPACE"])
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

type deadLetterRow struct {
	group          string
	class          cdc.ErrorClass
	state, outcome string
	offset         int64
}

func (p *pipeline) deadLetters() map[string]deadLetterRow {
	p.t.Helper()
	rows, err := p.dest.Query(context.Background(),
		`SELECT id, group_id, error_class, state, coalesce(outcome, ''), kafka_offset FROM cdcflow.dead_letters`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	out := map[string]deadLetterRow{}
	for rows.Next() {
		var id string
		var r deadLetterRow
		if err := rows.Scan(&id, &r.group, &r.class, &r.state, &r.outcome, &r.offset); err != nil {
			p.t.Fatal(err)
		}
		out[id] = r
	}
	return out
}

func (p *pipeline) waitDeadLetter(id string, state cdc.State) deadLetterRow {
	p.t.Helper()
	var row deadLetterRow
	eventually(p.t, 2*time.Minute, "dead letter "+id+" "+string(state), func() (bool, string) {
		var ok bool
		row, ok = p.deadLetters()[id]
		return ok && row.state == string(state), fmt.Sprintf("%+v", row)
	})
	return row
}

func (p *pipeline) salary(empID int) int {
	p.t.Helper()
	var s int
	if err := p.dest.QueryRow(context.Background(), `SELECT salary FROM employees WHERE emp_id = $1`, empID).Scan(&s); err != nil {
		return -999999
	}
	return s
}

// TestDeadLetters: a batch of 1,000 with 3 poison events is applied but for
// those, which are parked with their error class in the DLQ topic, the
// dead_letters table and a DeadLetter workflow each; then people decide with
// the temporal CLI and the SDK.
func TestDeadLetters(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	if err := db.Migrate(ctx, p.env["CDCFLOW_DEST_DSN"], migrations.DestFS()); err != nil {
		t.Fatal(err)
	}
	const check = `ALTER TABLE employees ADD CONSTRAINT salary_not_negative CHECK (salary >= 0) NOT VALID`
	if _, err := p.dest.Exec(ctx, check); err != nil {
		t.Fatal(err)
	}
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p.start("worker", fmt.Sprintf("CDCFLOW_METRICS_ADDR=127.0.0.1:%d", port))
	// The table not on the allowlist is retried for the ordering window.
	p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=1000", "CDCFLOW_BATCH_MAX_WAIT=3s", "CDCFLOW_ORDERING_WINDOW=3s")

	values := make([]string, 1000)
	for i := range values {
		values[i] = insertEvent(i+1, i+1, 1000+i, "public.employees")
	}
	values[100] = `{"action_id":101,"table":"public.employees","op":` // malformed JSON
	values[500] = insertEvent(501, 501, -1, "public.employees")       // violates the destination's CHECK
	values[900] = insertEvent(901, 901, 1, "public.payroll")          // not on the allowlist
	p.produceRaw(values...)

	p.waitApplied(997)
	sums := p.summaries(1000)
	tot := total(sums)
	if len(sums) != 1 || tot.Applied != 997 || tot.Failed != 3 {
		t.Fatalf("%d batches adding up to %+v, want one batch with 997 applied and 3 failed", len(sums), tot)
	}
	var batchID string
	for id := range sums {
		batchID = id
	}
	poisonID := cdc.PoisonDeadLetterID(p.topic, 0, 100, []byte(`{"action_id":101,"table":"public.employees","op":`))
	poisonGroup := cdc.DeadLetterGroupID(batchID, "", cdc.ClassInvalidEvent)
	checkGroup := cdc.DeadLetterGroupID(batchID, "public.employees", cdc.ClassConstraint)
	payrollGroup := cdc.DeadLetterGroupID(batchID, "public.payroll", cdc.ClassTableNotAllowed)
	want := map[string]deadLetterRow{
		poisonID:  {group: poisonGroup, class: cdc.ClassInvalidEvent, state: "parked", offset: 100},
		"dlq-501": {group: checkGroup, class: cdc.ClassConstraint, state: "parked", offset: 500},
		"dlq-901": {group: payrollGroup, class: cdc.ClassTableNotAllowed, state: "parked", offset: 900},
	}
	if got := p.deadLetters(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dead_letters %v, want %v", got, want)
	}
	if sort.Strings(sums[batchID].DeadLetters); !slices.Equal(sums[batchID].DeadLetters, []string{checkGroup, payrollGroup, poisonGroup}) {
		t.Fatalf("batch summary names dead letter groups %v", sums[batchID].DeadLetters)
	}
	p.checkDLQTopic(batchID, map[int64]string{100: poisonID, 500: "dlq-501", 900: "dlq-901"})
	// The metrics count each parked change once, and the open ones.
	if parked, open := metricValue(t, port, `cdcflow_apply_events_total{outcome="parked"`), metricValue(t, port, `cdcflow_dead_letters_open`); parked != 3 || open != 3 {
		t.Fatalf("metrics: %d changes parked, %d open; want 3 and 3", parked, open)
	}

	// The parked changes are found by their search attributes.
	eventually(t, time.Minute, "the constraint violation listed by search attributes", func() (bool, string) {
		resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: "CdcState = 'parked' AND CdcErrorClass = 'ConstraintViolation' AND CdcTable = 'public.employees'"})
		if err != nil {
			return false, err.Error()
		}
		ids := []string{}
		for _, ex := range resp.Executions {
			ids = append(ids, ex.Execution.WorkflowId)
		}
		return len(ids) == 1 && ids[0] == checkGroup, fmt.Sprint(ids)
	})

	// Query the status with the CLI: the documented shape.
	out, err := p.temporalCLI("workflow", "query", "--workflow-id", payrollGroup, "--type", cdc.QueryStatus, "--output", "json")
	if err != nil {
		t.Fatalf("temporal workflow query: %v\n%s", err, out)
	}
	var st cdc.DeadLetterStatus
	if err := json.Unmarshal([]byte(queryResult(t, out)), &st); err != nil {
		t.Fatalf("query result %s: %v", out, err)
	}
	if st.Group != payrollGroup || st.State != "parked" || st.Parked != 1 || st.Table != "public.payroll" ||
		st.ErrorClass != cdc.ClassTableNotAllowed || len(st.Changes) != 1 {
		t.Fatalf("status %+v", st)
	}
	var key bytes.Buffer
	if err := json.Compact(&key, st.Changes[0].Key); err != nil {
		t.Fatal(err)
	}
	if c := st.Changes[0]; c.ID != "dlq-901" || c.State != "parked" || c.ActionID != 901 || c.Attempts != 3 || c.Offset != 900 ||
		!strings.Contains(c.Error, "not on the allowlist") || c.BatchWorkflowID != batchID || len(c.Message) != 0 ||
		key.String() != `{"emp_id":901}` {
		t.Fatalf("parked change %+v", c)
	}

	// Fix the cause, replay with the CLI: applied once.
	if _, err := p.dest.Exec(ctx, `ALTER TABLE employees DROP CONSTRAINT salary_not_negative`); err != nil {
		t.Fatal(err)
	}
	if out, err := p.temporalCLI("workflow", "signal", "--workflow-id", checkGroup, "--name", cdc.SignalReplay); err != nil {
		t.Fatalf("temporal workflow signal replay: %v\n%s", err, out)
	}
	if row := p.waitDeadLetter("dlq-501", "replayed"); row.outcome != "applied" {
		t.Fatalf("replay decision %q", row.outcome)
	}
	if s := p.salary(501); s != -1 {
		t.Fatalf("emp 501 salary %d after replay, want -1", s)
	}
	// The same signal again changes nothing: the decision is made.
	out, err = p.temporalCLI("workflow", "signal", "--workflow-id", checkGroup, "--name", cdc.SignalReplay)
	if err == nil || !strings.Contains(out, "already completed") {
		t.Fatalf("second replay: %v\n%s", err, out)
	}
	if n := p.count(`SELECT count(*) FROM cdcflow.processed_events`); n != 998 {
		t.Fatalf("%d processed events after two replays, want 998", n)
	}

	// A discard without a reason is refused; the workflow keeps waiting.
	// As an update the CLI says so and fails; as a signal the refusal is
	// in the status.
	if out, err := p.temporalCLI("workflow", "update", "execute", "--workflow-id", poisonGroup, "--name", cdc.UpdateDiscard,
		"--input", `{"because": "no"}`); err == nil || !strings.Contains(out, "unknown field") || !strings.Contains(out, "because") {
		t.Fatalf("a refused discard by update: %v, want the CLI to fail naming the field\n%s", err, out)
	}
	if out, err := p.temporalCLI("workflow", "signal", "--workflow-id", poisonGroup, "--name", cdc.SignalDiscard,
		"--input", `{"because": "no"}`); err != nil {
		t.Fatalf("signal: %v\n%s", err, out)
	}
	if out, err := p.temporalCLI("workflow", "signal", "--workflow-id", payrollGroup, "--name", cdc.SignalDiscard,
		"--input", `{"reason": "payroll is not replicated"}`); err != nil {
		t.Fatalf("temporal workflow signal discard: %v\n%s", err, out)
	}
	if row := p.waitDeadLetter("dlq-901", "discarded"); row.outcome != "payroll is not replicated" {
		t.Fatalf("discard decision %q", row.outcome)
	}
	eventually(t, time.Minute, "the refused discard in the status", func() (bool, string) {
		v, err := p.temporal.QueryWorkflow(ctx, poisonGroup, "", cdc.QueryStatus)
		if err != nil {
			return false, err.Error()
		}
		var st cdc.DeadLetterStatus
		if err := v.Get(&st); err != nil {
			return false, err.Error()
		}
		return st.State == "parked" && len(st.Decisions) == 1 && st.Decisions[0].Action == "rejected" &&
			strings.Contains(st.Decisions[0].Error, "unknown field"), fmt.Sprintf("%+v", st)
	})

	eventually(t, time.Minute, "the decisions in the metrics", func() (bool, string) {
		replayed := metricValue(t, port, `cdcflow_dead_letters_decided_total{decision="replayed"`)
		discarded := metricValue(t, port, `cdcflow_dead_letters_decided_total{decision="discarded"`)
		open := metricValue(t, port, `cdcflow_dead_letters_open`)
		return replayed == 1 && discarded == 1 && open == 1, fmt.Sprintf("replayed %d, discarded %d, open %d", replayed, discarded, open)
	})

	p.correctedReplay(check)
	p.staleReplay(check)
	p.bulkDecisions(check, poisonID, poisonGroup)
}

// correctedReplay parks a change and replays it through the SDK with a
// corrected row image; a malformed image is refused first.
func (p *pipeline) correctedReplay(check string) {
	t, ctx := p.t, context.Background()
	if _, err := p.dest.Exec(ctx, check); err != nil {
		t.Fatal(err)
	}
	p.produceRaw(insertEvent(1001, 1001, -5, "public.employees"))
	group := p.waitDeadLetter("dlq-1001", "parked").group

	update := func(after string) (cdc.DeadLetterStatus, error) {
		h, err := p.temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: group,
			UpdateName: cdc.UpdateReplayCorrected, WaitForStage: client.WorkflowUpdateStageCompleted,
			Args: []any{cdc.ReplayRequest{After: json.RawMessage(after)}}})
		var st cdc.DeadLetterStatus
		if err == nil {
			err = h.Get(ctx, &st)
		}
		return st, err
	}
	if _, err := update(`["not", "a", "row"]`); err == nil || !strings.Contains(err.Error(), "after: want a JSON object of column values") {
		t.Fatalf("malformed corrected image: %v", err)
	}
	desc, err := p.temporal.DescribeWorkflow(ctx, group, "")
	if err != nil || desc.Status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("after a refused update the workflow is %v (%v), want running", desc, err)
	}
	st, err := update(`{"emp_id":1001,"first_name":"Fixed","last_name":"L","dob":"1990-01-02","city":"Oslo","salary":5}`)
	if err != nil {
		t.Fatal(err)
	}
	if st.Parked != 0 || st.Changes[0].State != "replayed" || !st.Decisions[len(st.Decisions)-1].Corrected {
		t.Fatalf("status after the corrected replay %+v", st)
	}
	if s := p.salary(1001); s != 5 {
		t.Fatalf("emp 1001 salary %d, want the corrected 5", s)
	}
	if _, err := p.dest.Exec(ctx, `ALTER TABLE employees DROP CONSTRAINT salary_not_negative`); err != nil {
		t.Fatal(err)
	}
}

// staleReplay parks a change to a row, lets a newer change to the row
// through, and replays the parked one: the row keeps the newer state.
func (p *pipeline) staleReplay(check string) {
	t, ctx := p.t, context.Background()
	if _, err := p.dest.Exec(ctx, check); err != nil {
		t.Fatal(err)
	}
	p.produceRaw(updateEvent(1002, 2, -7))
	group := p.waitDeadLetter("dlq-1002", "parked").group
	p.produceRaw(updateEvent(1003, 2, 77))
	eventually(t, time.Minute, "the newer change applied", func() (bool, string) {
		s := p.salary(2)
		return s == 77, strconv.Itoa(s)
	})
	if _, err := p.dest.Exec(ctx, `ALTER TABLE employees DROP CONSTRAINT salary_not_negative`); err != nil {
		t.Fatal(err)
	}
	if err := p.temporal.SignalWorkflow(ctx, group, "", cdc.SignalReplay, nil); err != nil {
		t.Fatal(err)
	}
	row := p.waitDeadLetter("dlq-1002", "replayed")
	if !strings.HasPrefix(row.outcome, "superseded") {
		t.Fatalf("replay of the stale change: %q, want superseded", row.outcome)
	}
	if s := p.salary(2); s != 77 {
		t.Fatalf("emp 2 salary %d after replaying the older change, want 77", s)
	}
}

// queryResult picks the query's value out of the CLI's JSON output.
func queryResult(t *testing.T, out string) string {
	t.Helper()
	var v struct {
		QueryResult []json.RawMessage `json:"queryResult"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.QueryResult) != 1 {
		t.Fatalf("temporal workflow query printed %s", out)
	}
	return string(v.QueryResult[0])
}

// checkDLQTopic reads the DLQ topic and checks each record's headers.
func (p *pipeline) checkDLQTopic(batchID string, ids map[int64]string) {
	p.t.Helper()
	dlq := p.topic + "_dlq"
	found := map[int64]map[string]string{}
	eventually(p.t, time.Minute, "3 records in "+dlq, func() (bool, string) {
		for part := 0; part < 4; part++ {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: dlq, Partition: part, MaxWait: 50 * time.Millisecond})
			for {
				c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				m, err := r.ReadMessage(c)
				cancel()
				if err != nil {
					break
				}
				h := map[string]string{}
				for _, x := range m.Headers {
					h[x.Key] = string(x.Value)
				}
				off, _ := strconv.ParseInt(h[cdc.HeaderOffset], 10, 64)
				found[off] = h
			}
			r.Close()
		}
		return len(found) == len(ids), fmt.Sprint(len(found), " records")
	})
	for off, h := range found {
		if ids[off] == "" || h[cdc.HeaderTopic] != p.topic || h[cdc.HeaderPartition] != "0" ||
			h[cdc.HeaderBatchWorkflowID] != batchID || h[cdc.HeaderBatchRunID] == "" || h[cdc.HeaderErrorClass] == "" ||
			h[cdc.HeaderError] == "" {
			p.t.Fatalf("DLQ record at offset %d has headers %v", off, h)
		}
		for _, k := range []string{cdc.HeaderFirstFailure, cdc.HeaderLastFailure} {
			if _, err := time.Parse(time.RFC3339Nano, h[k]); err != nil {
				p.t.Fatalf("header %s: %v", k, err)
			}
		}
		wantAttempts, wantTable := "3", "public.employees"
		if off == 100 {
			wantAttempts, wantTable = "1", ""
		}
		if off == 900 {
			wantTable = "public.payroll"
		}
		if h[cdc.HeaderAttempts] != wantAttempts || h[cdc.HeaderTable] != wantTable {
			p.t.Fatalf("DLQ record at offset %d: attempts %s table %q", off, h[cdc.HeaderAttempts], h[cdc.HeaderTable])
		}
	}
}

// dlqCommand runs the dlq program against the pipeline's Temporal.
func (p *pipeline) dlqCommand(args ...string) (string, error) {
	cmd := exec.Command(binary(p.t, "dlq"), args...)
	cmd.Env = append(cmd.Environ(), "TEMPORAL_ADDRESS="+p.env["TEMPORAL_ADDRESS"], "TEMPORAL_NAMESPACE="+p.env["TEMPORAL_NAMESPACE"])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bulkDecisions replays, then discards, every parked change matching a
// filter with the dlq command.
func (p *pipeline) bulkDecisions(check, poisonID, poisonGroup string) {
	t, ctx := p.t, context.Background()
	if _, err := p.dest.Exec(ctx, check); err != nil {
		t.Fatal(err)
	}
	p.produceRaw(insertEvent(1004, 1004, -1, "public.employees"), insertEvent(1005, 1005, -2, "public.employees"))
	groups := []string{p.waitDeadLetter("dlq-1004", "parked").group, p.waitDeadLetter("dlq-1005", "parked").group}
	filter := []string{"-table", "public.employees", "-class", "ConstraintViolation", "-since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}
	groups = slices.Compact(groups) // one batch or two
	eventually(t, time.Minute, "dlq list to find both", func() (bool, string) {
		out, err := p.dlqCommand(append([]string{"list"}, filter...)...)
		return err == nil && strings.Contains(out, fmt.Sprintf("%d dead letter groups matched", len(groups))), out
	})
	// The list says what each group is; a replay before the cause is fixed
	// fails again, says so, exits 1, and the rows record the new attempt.
	out, err := p.dlqCommand(append([]string{"list"}, filter...)...)
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(groups[0]) + ` +public\.employees +ConstraintViolation +[12] +\d+s ago +.*salary_not_negative`).MatchString(out) {
		t.Fatalf("dlq list shows no table, class, count, age and error of %s: %v\n%s", groups[0], err, out)
	}
	out, err = p.dlqCommand(append([]string{"replay"}, filter...)...)
	if err == nil || !strings.Contains(out, "still parked: dlq-1004") || !strings.Contains(out, "replay left changes parked in") {
		t.Fatalf("dlq replay before the fix: %v, want exit status 1 and the changes still parked\n%s", err, out)
	}
	var attempts int
	if err := p.dest.QueryRow(ctx, `SELECT attempts FROM cdcflow.dead_letters WHERE id = 'dlq-1004'`).Scan(&attempts); err != nil || attempts != 4 {
		t.Fatalf("dead_letters attempts of dlq-1004 after a failed replay: %d (%v), want 4", attempts, err)
	}
	if _, err := p.dest.Exec(ctx, `ALTER TABLE employees DROP CONSTRAINT salary_not_negative`); err != nil {
		t.Fatal(err)
	}
	if out, err := p.dlqCommand(append([]string{"replay"}, filter...)...); err != nil || !strings.Contains(out, "replay "+groups[0]+": ") {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	p.waitDeadLetter("dlq-1004", "replayed")
	p.waitDeadLetter("dlq-1005", "replayed")
	// Again: nothing is left to decide, which is no failure.
	if out, err := p.dlqCommand(append([]string{"replay"}, filter...)...); err != nil ||
		!(strings.Contains(out, "no parked dead letter group matches") || strings.Contains(out, "decided already, elsewhere")) {
		t.Fatalf("dlq replay of groups decided already: %v\n%s", err, out)
	}
	if a, b := p.salary(1004), p.salary(1005); a != -1 || b != -2 {
		t.Fatalf("salaries after bulk replay: %d, %d", a, b)
	}
	if out, err := p.dlqCommand("discard", "-class", "InvalidEvent"); err == nil || !strings.Contains(out, "discard needs -reason") {
		t.Fatalf("discard without a reason: %v\n%s", err, out)
	}
	if out, err := p.dlqCommand("discard", "-class", "InvalidEvent", "-reason", "producer fixed upstream"); err != nil ||
		!strings.Contains(out, "discard "+poisonGroup) || !strings.Contains(out, "1 dead letter groups matched") {
		t.Fatalf("dlq discard: %v\n%s", err, out)
	}
	if row := p.waitDeadLetter(poisonID, "discarded"); row.outcome != "producer fixed upstream" {
		t.Fatalf("decision %q", row.outcome)
	}
}
