package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var binaries struct {
	once sync.Once
	dir  string
	err  error
}

// binary builds the cdcflow programs once per test run and returns the path
// of one of them.
func binary(t testing.TB, name string) string {
	t.Helper()
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "cdcflow-bin-")
		if binaries.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binaries.dir+"/", "./worker", "./starter", "./capture", "./dlq", "./codec", "./devstack")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binaries.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return filepath.Join(binaries.dir, name)
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// pipeline is one isolated cdcflow deployment: its own destination database,
// topic, consumer group and task queue on the shared services.
type pipeline struct {
	t         testing.TB
	env       map[string]string
	brokers   []string
	kafka     *localsvc.Kafka // nil with an external broker
	topic     string
	taskQueue string
	dest      *pgxpool.Pool
	source    *pgxpool.Pool // nil until withSource
	temporal  client.Client
}

const partitions = 4

func newPipeline(t testing.TB) *pipeline {
	t.Helper()
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	p := &pipeline{t: t, topic: "cdc-" + name + "-" + suffix, taskQueue: "q-" + name + "-" + suffix}
	p.brokers, p.kafka = testenv.NewKafka(t, map[string]int32{p.topic: partitions})
	destDSN := testenv.NewDatabase(t, "e2e")
	tmp := testenv.TemporalServer(t)
	p.env = map[string]string{
		"TEMPORAL_ADDRESS":   tmp.Address,
		"TEMPORAL_NAMESPACE": tmp.Namespace,
		"CDCFLOW_TASK_QUEUE": p.taskQueue,
		"CDCFLOW_DEST_DSN":   destDSN,
		"KAFKA_BROKERS":      strings.Join(p.brokers, ","),
		"CDCFLOW_TOPIC":      p.topic,
		"CDCFLOW_GROUP_ID":   "starter-" + suffix,
		"CDCFLOW_LOG_LEVEL":  "info",
		"CDCFLOW_TABLES":     demo.Table,
		// Tests written for trigger capture say so here; startCapture
		// runs either mode.
		"CDCFLOW_CAPTURE_MODE": "trigger",
	}
	p.temporal = testenv.Dial(t, tmp)
	// The worker migrates at start; the test reads the destination through its own pool.
	p.useDest(destDSN)
	return p
}

// ownKafka gives the pipeline a broker of its own that keeps its data on
// disk, so that a test can restart it.
func (p *pipeline) ownKafka() {
	p.t.Helper()
	k, err := localsvc.StartKafka(localsvc.KafkaOptions{Topics: map[string]int32{p.topic: partitions}, DataDir: p.t.TempDir()})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(k.Close)
	p.kafka, p.brokers = k, k.Brokers
	p.env["KAFKA_BROKERS"] = strings.Join(k.Brokers, ",")
}

// withSource adds a source database; capture (started by the test) migrates
// it and installs the triggers.
func (p *pipeline) withSource() {
	p.t.Helper()
	p.useSource(testenv.NewDatabase(p.t, "source"))
}

// ownPostgres starts a PostgreSQL cluster for this test alone, which it may
// stop, crash and start; the cluster goes with the test.
func ownPostgres(t testing.TB, settings ...string) *localsvc.Postgres {
	t.Helper()
	pg, err := localsvc.StartPostgres(context.Background(), localsvc.PostgresOptions{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return pg
}

// useSource points the pipeline's source at dsn, with the demo table.
func (p *pipeline) useSource(dsn string) {
	p.t.Helper()
	p.env["CDCFLOW_SOURCE_DSN"] = dsn
	p.source = p.openWithDemo(dsn)
}

// useDest points the pipeline's destination at dsn, with the demo table.
func (p *pipeline) useDest(dsn string) {
	p.t.Helper()
	p.env["CDCFLOW_DEST_DSN"] = dsn
	p.dest = p.openWithDemo(dsn)
}

func (p *pipeline) openWithDemo(dsn string) *pgxpool.Pool {
	p.t.Helper()
	pool, err := db.Open(context.Background(), dsn, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(pool.Close)
	if err := demo.CreateTable(context.Background(), pool); err != nil {
		p.t.Fatal(err)
	}
	return pool
}

// captureModes are capture's modes, for tests that run in each.
var captureModes = []string{"logical", "trigger"}

// startCapture starts capture in mode with extra settings and waits until
// it captures table: its trigger is installed, or its replication slot
// (named after the source database) exists.
func (p *pipeline) startCapture(mode, table string, extra ...string) *proc {
	p.t.Helper()
	args := append([]string{"CDCFLOW_CAPTURE_MODE=" + mode}, extra...)
	var slot string
	if mode == "logical" {
		if err := p.source.QueryRow(context.Background(), `SELECT current_database()`).Scan(&slot); err != nil {
			p.t.Fatal(err)
		}
		testenv.DropSlotAtCleanup(p.t, p.source, slot) // after capture stops
		args = append(args, "CDCFLOW_SLOT="+slot)
	}
	pr := p.start("capture", args...)
	if mode == "logical" {
		p.waitSlot(slot)
	} else {
		waitTable(p.t, p.source, table)
	}
	return pr
}

// proc is a running cdcflow program and its output.
type proc struct {
	*localsvc.Process
	out *localsvc.Buffer
}

// start runs a cdcflow binary with the pipeline's environment plus extra.
// The test's cleanup stops it and expects a clean exit, unless the test
// killed it.
func (p *pipeline) start(name string, extra ...string) *proc {
	p.t.Helper()
	var env []string
	for k, v := range p.env {
		env = append(env, k+"="+v)
	}
	out := &localsvc.Buffer{}
	lp, err := localsvc.StartProgram(name, binary(p.t, name), append(env, extra...), out)
	if err != nil {
		p.t.Fatal(err)
	}
	pr := &proc{Process: lp, out: out}
	p.t.Cleanup(func() {
		pr.stop(p.t)
		if p.t.Failed() {
			p.t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return pr
}

// stop sends SIGTERM and waits for a clean exit; a process the test killed
// has ended already.
func (pr *proc) stop(t testing.TB) {
	t.Helper()
	if err := pr.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Error(err)
		return
	}
	if err := pr.Err(); err != nil && !strings.Contains(err.Error(), "killed") {
		t.Errorf("%s exited with %v:\n%s", pr.Name, err, pr.out.String())
	}
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *pipeline) count(sql string) int {
	p.t.Helper()
	var n int
	if err := p.dest.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		// Before the worker has migrated, the tables do not exist yet.
		return -1
	}
	return n
}

// waitApplied waits until n action_ids are recorded in the destination.
func (p *pipeline) waitApplied(n int) {
	p.t.Helper()
	eventually(p.t, 3*time.Minute, fmt.Sprintf("%d processed events", n), func() (bool, string) {
		got := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
		return got == n, fmt.Sprintf("%d processed", got)
	})
}

func (p *pipeline) snapshot() string {
	p.t.Helper()
	s, err := demo.Snapshot(context.Background(), p.dest)
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// summaries returns the results of the pipeline's completed batch workflows
// by workflow ID, once none is running and they hold events messages.
func (p *pipeline) summaries(events int) map[string]cdc.BatchSummary {
	p.t.Helper()
	ctx := context.Background()
	var out map[string]cdc.BatchSummary
	eventually(p.t, 2*time.Minute, "batch workflows to complete", func() (bool, string) {
		out = map[string]cdc.BatchSummary{}
		var token []byte
		open := 0
		for {
			resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
				Query:         fmt.Sprintf("TaskQueue = '%s' AND WorkflowType = '%s'", p.taskQueue, cdc.WorkflowApplyBatch),
				NextPageToken: token,
			})
			if err != nil {
				return false, err.Error()
			}
			for _, ex := range resp.Executions {
				id := ex.Execution.WorkflowId
				switch ex.Status {
				case enums.WORKFLOW_EXECUTION_STATUS_RUNNING:
					open++
				case enums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
					var sum cdc.BatchSummary
					if err := p.temporal.GetWorkflow(ctx, id, ex.Execution.RunId).Get(ctx, &sum); err != nil {
						return false, err.Error()
					}
					out[id] = sum
				case enums.WORKFLOW_EXECUTION_STATUS_FAILED:
					// Tests that expect failures look for them themselves.
				default:
					p.t.Fatalf("workflow %s ended %s", id, ex.Status)
				}
			}
			if token = resp.NextPageToken; len(token) == 0 {
				break
			}
		}
		got := total(out).Events
		return open == 0 && got == events, fmt.Sprintf("%d running, %d completed with %d events", open, len(out), got)
	})
	return out
}

func total(sums map[string]cdc.BatchSummary) cdc.BatchSummary {
	var t cdc.BatchSummary
	for _, s := range sums {
		t.Events += s.Events
		t.Applied += s.Applied
		t.Superseded += s.Superseded
		t.Duplicates += s.Duplicates
		t.Failed += s.Failed
	}
	return t
}

// committed returns the consumer group's committed offsets summed over
// partitions (an offset is the next message to read).
func (p *pipeline) committed() int64 {
	p.t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: p.env["CDCFLOW_GROUP_ID"], Topics: map[string][]int{p.topic: parts}})
	if err != nil {
		return -1
	}
	var sum int64
	for _, part := range resp.Topics[p.topic] {
		if part.CommittedOffset > 0 {
			sum += part.CommittedOffset
		}
	}
	return sum
}

// resetGroup moves the consumer group back to the start of every partition.
// The group must have no members.
func (p *pipeline) resetGroup() {
	p.t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	commits := make([]kafka.OffsetCommit, partitions)
	for i := range commits {
		commits[i] = kafka.OffsetCommit{Partition: i, Offset: 0}
	}
	resp, err := c.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{
		GroupID: p.env["CDCFLOW_GROUP_ID"], GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{p.topic: commits}})
	if err != nil {
		p.t.Fatal(err)
	}
	for _, part := range resp.Topics[p.topic] {
		if part.Error != nil {
			p.t.Fatalf("reset partition %d: %v", part.Partition, part.Error)
		}
	}
	if got := p.committed(); got != 0 {
		p.t.Fatalf("after reset the group is at %d", got)
	}
}

// logValue returns the integer logged as key=N in the last line of out that
// contains msg.
func logValue(t testing.TB, out, msg, key string) int {
	t.Helper()
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, msg) {
			line = l
		}
	}
	m := regexp.MustCompile(`\b` + key + `=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s= in a %q line of:\n%s", key, msg, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func itoa(n int) string { return strconv.Itoa(n) }

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
