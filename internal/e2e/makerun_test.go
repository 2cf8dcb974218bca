package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
)

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

func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !zombie.Match(stat)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}
