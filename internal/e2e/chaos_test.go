package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// The fault campaign: seeded runs of a mixed workload from concurrent
// writers while faults hit every part at random moments, each followed by
// a ledger check. `make test` runs a short campaign with fixed seeds;
// `make chaos CHAOS_RUNS=100` a long one with random seeds.
//
//	CDCFLOW_CHAOS_RUNS     runs (default 2)
//	CDCFLOW_CHAOS_SEED     seed of the first run (default 1; later runs add 1)
//	CDCFLOW_CHAOS_SECONDS  seconds of load and faults per run (default 30)
func TestChaos(t *testing.T) {
	if testenv.ExternalServices() {
		t.Skip("kills and restarts its own services")
	}
	runs, seed, seconds := envInt("CDCFLOW_CHAOS_RUNS", 2), envInt("CDCFLOW_CHAOS_SEED", 1), envInt("CDCFLOW_CHAOS_SECONDS", 30)
	var total ledger
	for i := range runs {
		s := uint64(seed + i)
		var l ledger
		ok := t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			chaosRun(t, s, time.Duration(seconds)*time.Second, &l)
		})
		total.add(l)
		fmt.Printf("chaos: seed %d (%s capture): changes %d, faults %d (%s), lost %d, applied twice %d, stuck %d, passed %v\n",
			s, chaosMode(s), l.changes, l.faults, strings.Join(l.kinds, " "), l.lost, l.twice, l.stuck, ok)
	}
	fmt.Printf("runs %d, faults %d, lost %d, applied twice %d, stuck %d\n", runs, total.faults, total.lost, total.twice, total.stuck)
}

// chaosMode is the capture mode of the run of seed.
func chaosMode(seed uint64) string {
	if seed%2 == 1 {
		return "logical"
	}
	return "trigger"
}

// ledger is what a run found.
type ledger struct {
	changes, faults, lost, twice, stuck int
	kinds                               []string
}

func (l *ledger) add(o ledger) {
	l.changes += o.changes
	l.faults += o.faults
	l.lost += o.lost
	l.twice += o.twice
	l.stuck += o.stuck
}

// chaosTables are replicated besides employees: an identity key, a
// partitioned table and rows from 1 byte to 4 MiB (those above 512 KiB
// travel as chunks).
const chaosTables = `
CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text, balance int);
CREATE TABLE readings (day date, sensor int, value int, PRIMARY KEY (day, sensor)) PARTITION BY RANGE (day);
CREATE TABLE readings_a PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE readings_b PARTITION OF readings FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
CREATE TABLE blobs (id int PRIMARY KEY, body text);`

var chaosOrder = map[string]string{"public.employees": "emp_id", "public.accounts": "id", "public.readings": "day, sensor", "public.blobs": "id"}

func chaosRun(t *testing.T, seed uint64, length time.Duration, l *ledger) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 99))
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}

	// Services of its own, so that faults hit nothing else. A crashed server
	// keeps what it reported committed (synchronous_commit=on), as in
	// production; fsync stays off, since the machine itself does not crash.
	sourcePG := ownPostgres(t, "track_commit_timestamp=on", "synchronous_commit=on")
	destPG := ownPostgres(t, "synchronous_commit=on")
	tmp, err := localsvc.StartTemporal(ctx, localsvc.TemporalOptions{SearchAttributes: cdc.SearchAttributes,
		DBFile: filepath.Join(dir, "temporal.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()

	p := newPipeline(t)
	p.ownKafka()
	p.useSource(sourcePG.DSN)
	p.useDest(destPG.DSN)
	p.env["TEMPORAL_ADDRESS"] = tmp.Address
	p.env["CDCFLOW_TABLES"] = "public.employees,public.accounts,public.readings,public.blobs"
	p.env["CDCFLOW_RECONCILE_EVERY"] = "5s"
	p.temporal = testenv.Dial(t, tmp)
	for _, pool := range []*pgxpool.Pool{p.source, p.dest} {
		if _, err := pool.Exec(ctx, chaosTables); err != nil {
			t.Fatal(err)
		}
	}
	// Odd seeds capture from the log, even ones by trigger.
	p.env["CDCFLOW_CAPTURE_MODE"] = chaosMode(seed)
	procs := map[string]*proc{}
	var procsMu sync.Mutex
	startProg := func(name string) {
		procsMu.Lock()
		defer procsMu.Unlock()
		procs[name] = p.start(name, "CDCFLOW_LOG_LEVEL=warn", "CDCFLOW_APPLY_LOCK_TIMEOUT=2s")
	}
	for _, name := range []string{"capture", "worker", "starter"} {
		startProg(name)
	}
	if chaosMode(seed) == "logical" {
		p.waitSlot("cdcflow")
	} else {
		waitTable(t, p.source, "blobs")
	}

	// Writers.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wrng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(wrng.IntN(20)) * time.Millisecond):
				}
				if chaosWrite(ctx, p.source, wrng) {
					writes.Add(1)
				}
			}
		}()
	}

	// Faults, at random moments, until the run's length has passed.
	outage := &brokerOutage{kafka: p.kafka}
	deadline := time.Now().Add(length)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(2+rng.IntN(4)) * time.Second)
		pause := time.Duration(2+rng.IntN(6)) * time.Second
		kinds := []string{"kill-capture", "kill-starter", "kill-worker", "kill-temporal", "crash-destination",
			"stop-source", "broker-down", "pause-worker", "pause-starter", "pause-temporal", "restart-broker"}
		kind := kinds[rng.IntN(len(kinds))]
		l.faults++
		l.kinds = append(l.kinds, kind)
		switch kind {
		case "kill-capture", "kill-starter", "kill-worker":
			name := strings.TrimPrefix(kind, "kill-")
			procsMu.Lock()
			procs[name].Kill()
			procsMu.Unlock()
			time.Sleep(pause / 4)
			startProg(name)
		case "kill-temporal":
			tmp.Kill()
			time.Sleep(pause / 4)
			if err := tmp.Start(ctx); err != nil {
				t.Fatal(err)
			}
		case "crash-destination":
			if err := destPG.Crash(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(pause)
			if err := destPG.Start(ctx); err != nil {
				t.Fatal(err)
			}
		case "stop-source":
			if err := sourcePG.Stop(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(pause)
			if err := sourcePG.Start(ctx); err != nil {
				t.Fatal(err)
			}
		case "broker-down":
			outage.begin()
			time.Sleep(pause)
			outage.end()
		case "restart-broker":
			if err := p.kafka.Restart(); err != nil {
				t.Fatal(err)
			}
		case "pause-worker", "pause-starter":
			procsMu.Lock()
			pr := procs[strings.TrimPrefix(kind, "pause-")]
			procsMu.Unlock()
			_ = pr.Signal(syscall.SIGSTOP)
			time.Sleep(pause)
			_ = pr.Signal(syscall.SIGCONT)
		case "pause-temporal":
			_ = tmp.Process().Signal(syscall.SIGSTOP)
			time.Sleep(pause)
			_ = tmp.Process().Signal(syscall.SIGCONT)
		}
	}
	close(stop)
	wg.Wait()

	// Everything heals; the pipeline must converge on its own.
	converged := time.Now().Add(5 * time.Minute)
	for table, order := range chaosOrder {
		for {
			sh, sn := tableHash(t, p.source, table, order)
			dh, dn := tableHash(t, p.dest, table, order)
			if sh == dh && sn == dn {
				break
			}
			if time.Now().After(converged) {
				t.Errorf("%s differs: source %d rows %s, destination %d rows %s", table, sn, sh, dn, dh)
				p.diffRows(table, order)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	published := p.publishedActionIDs()
	l.changes = len(published)
	var applied, parked, both int
	err = p.dest.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM cdcflow.processed_events WHERE action_id = ANY($1)),
		(SELECT count(*) FROM cdcflow.dead_letters WHERE action_id = ANY($1)),
		(SELECT count(*) FROM cdcflow.dead_letters d JOIN cdcflow.processed_events e USING (action_id))`, published).
		Scan(&applied, &parked, &both)
	if err != nil {
		t.Fatal(err)
	}
	l.lost = len(published) - applied - parked + both
	if l.lost > 0 {
		p.logLost(published)
		p.logConsumers()
	}
	l.twice = both
	l.stuck = p.unfinishedBatches()
	if l.lost != 0 || l.twice != 0 || l.stuck != 0 || parked != 0 {
		t.Errorf("ledger: %d changes published, %d applied, %d parked, %d both, %d batches unfinished", len(published), applied, parked, both, l.stuck)
	}
	if writes.Load() == 0 {
		t.Error("the writers wrote nothing")
	}
}

// diffRows logs the rows of table that differ between source and
// destination, and what happened to their changes.
func (p *pipeline) diffRows(table, order string) {
	ctx := context.Background()
	rows := func(pool *pgxpool.Pool) map[string]string {
		out := map[string]string{}
		r, err := pool.Query(ctx, fmt.Sprintf(`SELECT (%s)::text, r::text FROM %s r`, "row("+order+")", table))
		if err != nil {
			p.t.Log(err)
			return out
		}
		defer r.Close()
		for r.Next() {
			var k, v string
			if err := r.Scan(&k, &v); err == nil {
				out[k] = v
			}
		}
		return out
	}
	src, dst := rows(p.source), rows(p.dest)
	for k, v := range src {
		if dst[k] != v {
			p.t.Logf("%s %s: source %s, destination %q", table, k, v, dst[k])
		}
	}
	for k, v := range dst {
		if _, ok := src[k]; !ok {
			p.t.Logf("%s %s: only on the destination: %s", table, k, v)
		}
	}
}

// chaosWrite makes one random transaction on the source; it reports whether
// it committed (failures while the source is down are expected).
func chaosWrite(ctx context.Context, pool *pgxpool.Pool, rng *rand.Rand) bool {
	var sql string
	var args []any
	switch r := rng.IntN(10); {
	case r < 4:
		n, err := writeTx(ctx, pool, rng, 300)
		return err == nil && n > 0
	case r < 6:
		sql = `INSERT INTO accounts (owner, balance) VALUES ($1, $2)`
		args = []any{fmt.Sprintf("o%d", rng.IntN(1000)), rng.IntN(1000)}
		if rng.IntN(3) == 0 {
			sql, args = `DELETE FROM accounts WHERE id = (SELECT min(id) FROM accounts)`, nil
		}
	case r < 8:
		day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rng.IntN(365))
		sql = `INSERT INTO readings VALUES ($1, $2, $3) ON CONFLICT (day, sensor) DO UPDATE SET value = EXCLUDED.value`
		args = []any{day, rng.IntN(5), rng.IntN(1000)}
	default:
		size := 1 << rng.IntN(23) // 1 B .. 4 MiB
		sql = `INSERT INTO blobs VALUES ($1, repeat(md5($3::text), $2 / 32 + 1)) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body`
		args = []any{rng.IntN(50), size, rng.Int()}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := pool.Exec(cctx, sql, args...)
	return err == nil
}

// brokerOutage makes the in-process broker refuse every request (closing
// the connection) between begin and end, as a broker that went away would.
type brokerOutage struct {
	kafka *localsvc.Kafka
	down  atomic.Bool
}

func (o *brokerOutage) begin() {
	o.down.Store(true)
	cluster := o.kafka.Cluster()
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.ListOffsets, kmsg.Metadata, kmsg.OffsetCommit, kmsg.OffsetFetch,
		kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.Heartbeat, kmsg.LeaveGroup, kmsg.SyncGroup} {
		cluster.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			if !o.down.Load() {
				return nil, nil, false // control ends with the outage
			}
			cluster.KeepControl()
			return nil, errors.New("broker down"), true
		})
	}
}

func (o *brokerOutage) end() { o.down.Store(false) }

// publishedActionIDs reads every change event of the topic.
func (p *pipeline) publishedActionIDs() []int64 {
	p.t.Helper()
	seen := map[int64]bool{}
	for part := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: p.topic, Partition: part, MaxWait: 100 * time.Millisecond})
		conn, err := kafka.DialLeader(context.Background(), "tcp", p.brokers[0], p.topic, part)
		if err != nil {
			p.t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			p.t.Fatal(err)
		}
		for off := int64(0); off < last; off++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				p.t.Fatalf("read partition %d offset %d: %v", part, off, err)
			}
			if ev, err := event.Decode(m.Value); err == nil {
				seen[ev.ActionID] = true
			}
			off = m.Offset
		}
		r.Close()
	}
	ids := make([]int64, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	return ids
}

// unfinishedBatches counts batch workflows that are running, or whose
// latest run closed without completing.
func (p *pipeline) unfinishedBatches() int {
	p.t.Helper()
	ctx := context.Background()
	n := 0
	eventually(p.t, 3*time.Minute, "no batch workflow running", func() (bool, string) {
		resp, err := p.temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", cdc.WorkflowApplyBatch)})
		if err != nil {
			return false, err.Error()
		}
		return resp.Count == 0, strconv.FormatInt(resp.Count, 10) + " running"
	})
	resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus != 'Completed'", cdc.WorkflowApplyBatch)})
	if err != nil {
		p.t.Fatal(err)
	}
	for _, ex := range resp.Executions {
		desc, err := p.temporal.DescribeWorkflow(ctx, ex.Execution.WorkflowId, "")
		if err != nil {
			p.t.Fatal(err)
		}
		if desc.RawResponse.WorkflowExecutionInfo.Status != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			n++
		}
	}
	return n
}

// logLost logs published changes that were neither applied nor parked.
func (p *pipeline) logLost(published []int64) {
	rows, err := p.dest.Query(context.Background(), `SELECT id FROM unnest($1::bigint[]) id
		WHERE id NOT IN (SELECT action_id FROM cdcflow.processed_events)
		  AND id NOT IN (SELECT action_id FROM cdcflow.dead_letters WHERE action_id IS NOT NULL) ORDER BY id LIMIT 20`, published)
	if err != nil {
		p.t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			p.t.Logf("lost: action_id %d", id)
		}
	}
}

// logConsumers logs, per partition, the end of the log and the consumer
// group's committed offset, and the group's members and their partitions:
// where a loss shows whether the starter stopped reading.
func (p *pipeline) logConsumers() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	parts := make([]int, partitions)
	var reqs []kafka.OffsetRequest
	for i := range parts {
		parts[i] = i
		reqs = append(reqs, kafka.LastOffsetOf(i))
	}
	last, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{p.topic: reqs}})
	if err != nil {
		p.t.Logf("list offsets: %v", err)
		return
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: p.env["CDCFLOW_GROUP_ID"], Topics: map[string][]int{p.topic: parts}})
	if err != nil {
		p.t.Logf("committed offsets: %v", err)
		return
	}
	for _, po := range last.Topics[p.topic] {
		for _, co := range committed.Topics[p.topic] {
			if co.Partition == po.Partition {
				p.t.Logf("partition %d: log ends at %d, the group committed %d", po.Partition, po.LastOffset, co.CommittedOffset)
			}
		}
	}
	groups, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{p.env["CDCFLOW_GROUP_ID"]}})
	if err != nil {
		p.t.Logf("describe group: %v", err)
		return
	}
	for _, g := range groups.Groups {
		p.t.Logf("group %s: state %s, %d members", g.GroupID, g.GroupState, len(g.Members))
		for _, m := range g.Members {
			p.t.Logf("member %s (%s): %v", m.MemberID, m.ClientHost, m.MemberAssignments.Topics)
		}
	}
}
