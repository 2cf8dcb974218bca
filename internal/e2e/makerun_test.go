package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
)

// TestMakeRunSmoke runs devstack as `make run` does, with the Temporal
// port it prefers taken: it starts everything, the banner's psql command
// inserts a row on the source, the row reaches the destination; in a shell
// that has only the banner's exports, its dead-letter commands park a
// change, list it with dlq and the temporal CLI and replay it; and Ctrl-C
// leaves no process behind.
func TestMakeRunSmoke(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	// Take 7233 when it is free: the dev server moves to another port, which
	// the banner's TEMPORAL_ADDRESS must name (dlq's default is 7233).
	if l, err := net.Listen("tcp", "127.0.0.1:7233"); err == nil {
		defer l.Close()
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
		devstack.Stop(os.Interrupt, time.Minute) //nolint:errcheck // Ctrl-C, so that it removes its clusters; killed after a minute
		if t.Failed() {
			t.Logf("devstack output:\n%s", logs.String())
		}
	}()

	// Read the banner up to its last line, dlq replay.
	banner := map[string]string{}
	var insert, exports string
	var commands []string // the dead-letter section's, in order
	var served []string   // the metrics and codec addresses
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(3*time.Minute, devstack.Kill)
	for lines.Scan() {
		line := lines.Text()
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "source" || f[0] == "destination" || f[0] == "temporal") {
			banner[f[0]] = f[1]
		}
		switch {
		case strings.Contains(line, "/metrics  http://") || strings.HasPrefix(line, "  codec "):
			served = append(served, strings.Fields(line)...)
		case strings.HasPrefix(line, "  export "):
			exports += line + "\n"
		case strings.HasPrefix(line, "  psql ") && strings.Contains(line, "INSERT") && insert == "":
			insert = strings.TrimSpace(line)
		case strings.HasPrefix(line, "  psql \"$") || strings.HasPrefix(line, "  dlq ") || strings.HasPrefix(line, "  temporal workflow "):
			commands = append(commands, strings.TrimSpace(line))
		}
		if line == "  dlq replay" {
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
	if banner["temporal"] == "127.0.0.1:7233" {
		t.Fatalf("the dev server is on 7233, which the test holds: %v", banner)
	}
	if !strings.Contains(exports, "export TEMPORAL_ADDRESS="+banner["temporal"]+"\n") {
		t.Fatalf("the banner's exports do not name the dev server at %s:\n%s", banner["temporal"], exports)
	}
	if len(commands) != 6 {
		t.Fatalf("want the banner's 6 dead-letter commands, got %d: %q", len(commands), commands)
	}
	children := descendants(devstack.Pid())

	// Every program's metrics, readiness and the codec answer where the
	// banner says.
	var urls []string
	for _, f := range served {
		if strings.HasPrefix(f, "http://") {
			urls = append(urls, f)
		}
	}
	if len(urls) != 7 { // 3 programs x (metrics, readyz), the codec
		t.Fatalf("the banner names %d addresses for the metrics, readiness and codec, want 7: %q", len(urls), served)
	}
	for _, u := range urls {
		if !strings.HasSuffix(u, "/metrics") && !strings.HasSuffix(u, "/readyz") {
			u += "/healthz" // the codec
		}
		eventually(t, time.Minute, u+" to answer 200", func() (bool, string) {
			resp, err := http.Get(u)
			if err != nil {
				return false, err.Error()
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ok := resp.StatusCode == http.StatusOK && (!strings.HasSuffix(u, "/metrics") || strings.Contains(string(body), "cdcflow_"))
			return ok, fmt.Sprintf("%s: %.200s", resp.Status, body)
		})
	}

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

	// The dead-letter section, pasted into another terminal: one that has
	// neither temporal nor dlq on its PATH, nor TEMPORAL_ADDRESS, until the
	// exports.
	paste := func(cmds ...string) (string, error) {
		sh := exec.Command("bash", "-e", "-c", exports+strings.Join(cmds, "\n"))
		sh.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.Getenv("HOME")}
		out, err := sh.CombinedOutput()
		return string(out), err
	}
	if out, err := paste(commands[0], commands[1]); err != nil {
		t.Fatalf("the banner's constraint and insert: %v\n%s", err, out)
	}
	eventually(t, time.Minute, "dlq list to show the dead letter", func() (bool, string) {
		out, err := paste(commands[2])
		return err == nil && containsAll(out, "public.employees", "ConstraintViolation", "1 dead letter groups matched"), out
	})
	eventually(t, time.Minute, "temporal workflow list to show the DeadLetter workflow", func() (bool, string) {
		out, err := paste(commands[3])
		return err == nil && containsAll(out, "Running", "DeadLetter"), out
	})
	if out, err := paste(commands[4], commands[5]); err != nil || !strings.Contains(out, ": applied") {
		t.Fatalf("the banner's drop and replay: %v\n%s", err, out)
	}
	var salary int
	if err := dest.QueryRow(context.Background(), `SELECT salary FROM employees WHERE emp_id = 2`).Scan(&salary); err != nil || salary != -1 {
		t.Fatalf("the replayed row on the destination: salary %d, %v", salary, err)
	}

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

// TestMakeRunInterrupted presses Ctrl-C (SIGINT to devstack's process
// group, as a terminal does) while devstack is starting, at three points:
// devstack stops what it started, says so in one line and exits 0, and
// shows nothing of what was called off.
func TestMakeRunInterrupted(t *testing.T) {
	for _, c := range []struct {
		name string
		is   func(args []string) bool // the process to interrupt at
	}{
		{"initdb", func(args []string) bool { return filepath.Base(args[0]) == "initdb" }},
		{"temporal dev server", func(args []string) bool { return slices.Contains(args, "start-dev") }},
		{"worker", func(args []string) bool { return filepath.Base(args[0]) == "worker" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := []string{}
			for _, v := range []string{"CDCFLOW_SOURCE_DSN", "CDCFLOW_DEST_DSN", "KAFKA_BROKERS", "TEMPORAL_ADDRESS"} {
				env = append(env, v+"=")
			}
			var out localsvc.Buffer
			devstack, err := localsvc.StartProgram("devstack", binary(t, "devstack"), env, &out)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				devstack.Stop(os.Interrupt, time.Minute) //nolint:errcheck // Ctrl-C, so that it removes its clusters; killed after a minute
				if t.Failed() {
					t.Logf("devstack output:\n%s", out.String())
				}
			}()

			// Every process seen under devstack until the one to interrupt
			// at runs.
			seen := map[int]bool{}
			for found := false; !found; {
				for _, pid := range descendants(devstack.Pid()) {
					seen[pid] = true
					if a := args(pid); a[0] != "" && c.is(a) {
						found = true
					}
				}
				if found {
					break
				}
				select { // look again in a moment, unless devstack ended
				case <-devstack.Done():
					t.Fatalf("devstack ended (%v) before %s ran", devstack.Err(), c.name)
				case <-time.After(5 * time.Millisecond):
				}
			}
			if err := syscall.Kill(-devstack.Pid(), syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-devstack.Done():
			case <-time.After(2 * time.Minute):
				t.Fatal("devstack did not stop within 2 minutes of Ctrl-C")
			}
			if err := devstack.Err(); err != nil {
				t.Errorf("devstack exited with %v, want status 0", err)
			}
			got := strings.TrimSpace(out.String())
			if got != "cdcflow stopped: interrupted during start-up" {
				t.Errorf("devstack said %q, want only that it stopped", got)
			}
			for pid := range seen {
				if alive(pid) {
					t.Errorf("process %d (%s) outlived devstack", pid, cmdline(pid))
				}
			}
		})
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

func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !zombie.Match(stat)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// args is a process's command line, split into its arguments.
func args(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
