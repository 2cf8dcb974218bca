package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/migrations"
)

const allTypes = `CREATE TABLE public.all_types (
	id        int,
	region    text,
	c_int     int,
	c_big     bigint,
	c_num     numeric,
	c_text    text,
	c_varchar varchar(40),
	c_bool    boolean,
	c_date    date,
	c_ts      timestamptz,
	c_uuid    uuid,
	c_jsonb   jsonb,
	c_bytea   bytea,
	c_ints    int[],
	c_texts   text[],
	PRIMARY KEY (id, region)
)`

// TestColumnTypesRoundTrip: every common column type, NULLs and a 1 MB text
// value arrive exactly, under a composite primary key.
func TestColumnTypesRoundTrip(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	if _, err := p.source.Exec(ctx, allTypes); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, p.env["CDCFLOW_DEST_DSN"], migrations.DestFS()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.dest.Exec(ctx, allTypes); err != nil {
		t.Fatal(err)
	}
	env := "CDCFLOW_TABLES=public.all_types"
	p.start("capture", env)
	p.start("worker", env)
	p.start("starter")
	waitTable(t, p.source, "all_types")

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	_, err := p.source.Exec(ctx, `
		INSERT INTO all_types VALUES
		(1, 'eu', -2147483648, 9223372036854775807, 12345678901234567890.123456789012, 'plain "quoted" \ back\slash, unicode: żółw 🐢',
		 'varchar', true, '2026-02-28', '2026-11-25 10:00:00.123456+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '{"a": [1, 2.5, null, "x"], "b": {"c": true}}', '\x00ff10', '{1,NULL,3}', '{"a b","c,d",NULL}'),
		(2, 'us', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(3, 'eu', 0, 0, -0.000001, '', '', false, '0001-01-01', '1970-01-01 00:00:00+00', '00000000-0000-0000-0000-000000000000',
		 '"just a string"', '\x', '{}', '{}'),
		(4, 'big', 1, 1, 1, $1, 'x', true, '2000-01-01', now(), gen_random_uuid(), '[]', decode(md5($1), 'hex'), '{1}', '{big}')`, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.source.Exec(ctx, `UPDATE all_types SET c_num = 1e-20, c_texts = '{"new"}' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.source.Exec(ctx, `UPDATE all_types SET region = 'apac' WHERE id = 3`); err != nil { // primary-key change
		t.Fatal(err)
	}
	p.waitSame("public.all_types", "id, region", 2*time.Minute)
	var length int
	var nulls int
	if err := p.dest.QueryRow(ctx, `SELECT length(c_text) FROM all_types WHERE id = 4`).Scan(&length); err != nil || length != len(big) {
		t.Fatalf("1 MB text arrived as %d characters (%v)", length, err)
	}
	if err := p.dest.QueryRow(ctx, `SELECT num_nulls(c_int, c_big, c_num, c_text, c_varchar, c_bool, c_date, c_ts, c_uuid, c_jsonb, c_bytea, c_ints, c_texts) FROM all_types WHERE id = 2`).Scan(&nulls); err != nil || nulls != 13 {
		t.Fatalf("row of NULLs has %d NULLs (%v), want 13", nulls, err)
	}
}

// TestMakeRunSmoke runs devstack as `make run` does: it starts everything,
// the banner's psql command inserts a row on the source, the row reaches the
// destination, and Ctrl-C leaves no process behind.
func TestMakeRunSmoke(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	env := []string{"CDCFLOW_LOG_LEVEL=warn"}
	for _, v := range []string{"CDCFLOW_SOURCE_DSN", "CDCFLOW_DEST_DSN", "KAFKA_BROKERS", "TEMPORAL_ADDRESS"} {
		env = append(env, v+"=")
	}
	// Standard output and error both go to the pipe; the banner's lines are
	// told apart from log lines by their shape.
	stdout, w := io.Pipe()
	var logs localsvc.Buffer
	devstack, err := localsvc.StartProgram("devstack", binary(t, "devstack"), env, io.MultiWriter(w, &logs))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-devstack.Done()
		w.Close()
	}()
	defer func() {
		devstack.Kill()
		if t.Failed() {
			t.Logf("devstack output:\n%s", logs.String())
		}
	}()

	// Read the banner up to the destination psql line.
	banner := map[string]string{}
	var insert string
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(3*time.Minute, devstack.Kill)
	for lines.Scan() {
		line := lines.Text()
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "source" || f[0] == "destination") {
			banner[f[0]] = f[1]
		}
		if strings.HasPrefix(line, "  psql ") && strings.Contains(line, "INSERT") {
			insert = strings.TrimSpace(line)
		}
		if strings.HasPrefix(line, "  psql ") && strings.Contains(line, "SELECT") {
			break
		}
	}
	deadline.Stop()
	go func() { // keep draining stdout
		for lines.Scan() {
		}
	}()
	if banner["source"] == "" || banner["destination"] == "" || insert == "" {
		t.Fatalf("banner lacks source, destination or the insert command: %v %q", banner, insert)
	}
	children := descendants(devstack.Pid())

	// Run the banner's command as a person would paste it.
	eventually(t, time.Minute, "the banner's psql insert to succeed", func() (bool, string) {
		out, err := exec.Command("bash", "-c", insert).CombinedOutput()
		return err == nil, string(out)
	})
	dest, err := db.Open(context.Background(), banner["destination"], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	eventually(t, time.Minute, "the row on the destination", func() (bool, string) {
		var city string
		err := dest.QueryRow(context.Background(), `SELECT city FROM employees WHERE emp_id = 1`).Scan(&city)
		return err == nil && city == "London", fmt.Sprint(city, err)
	})

	if err := devstack.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-devstack.Done():
		if err := devstack.Err(); err != nil {
			t.Fatalf("devstack exited with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("devstack did not stop within a minute of Ctrl-C")
	}
	if len(children) < 4 {
		t.Fatalf("found only %d processes under devstack: %v", len(children), children)
	}
	for _, pid := range children {
		if alive(pid) {
			t.Errorf("process %d (%s) outlived devstack", pid, cmdline(pid))
		}
	}
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces; fields after ") " start with state, ppid.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ppid, _ := strconv.Atoi(f[1])
		parent[child] = ppid
	}
	var out []int
	for child := range parent {
		for p := parent[child]; p != 0; p = parent[p] {
			if p == pid {
				out = append(out, child)
				break
			}
		}
	}
	return out
}

var zombie = regexp.MustCompile(`\) Z `)

func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !zombie.Match(stat)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}
