package deployments

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAlertRulesFire runs the rules' unit tests (prometheus/alerts_test.yml:
// series in, the alerts that fire and their text out) with Prometheus's
// promtool, from Debian's prometheus package, which CI installs.
func TestAlertRulesFire(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found: apt-get install prometheus (CI installs it)")
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
