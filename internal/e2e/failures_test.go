package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"
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
