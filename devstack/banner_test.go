package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/cdcflow/cdcflow/internal/demo"
)

// A DSN given in the environment may hold a password; the banner shows
// none, anywhere.
func TestBannerShowsNoPassword(t *testing.T) {
	b := banner{source: "postgres://app:s3cret@src.example/app", dest: "host=dst.example user=app password=s3cret",
		brokers: "127.0.0.1:9092", topic: "cdcflow.changes", temporal: "127.0.0.1:7233", ui: "http://127.0.0.1:8233",
		temporalCLI: "/opt/temporal", programs: "/src/cdcflow/bin"}
	s := b.String()
	if strings.Contains(s, "s3cret") {
		t.Fatalf("the banner shows a password:\n%s", s)
	}
	for _, want := range []string{
		"  export CDCFLOW_SOURCE_DSN='postgres://app:****@src.example/app'\n",
		"  export CDCFLOW_DEST_DSN='host=dst.example user=app password=****'\n",
		"  # **** stands for the password of the DSN you gave\n",
		"  export PATH=/opt/temporal:/src/cdcflow/bin:$PATH\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the banner lacks %q:\n%s", want, s)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"127.0.0.1:7233", "/home/a b/bin", "postgres://u@h/d?sslmode=disable&x=1", "it's", "$HOME", ""} {
		out, err := exec.Command("bash", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("bash read shellQuote(%q) = %s as %q (%v)", s, shellQuote(s), out, err)
		}
	}
}

// make run CDCFLOW_DEMO_RATE=N writes keys the banner's inserts do not use.
func TestDemoKeysClearOfBanner(t *testing.T) {
	g := demo.NewGenerator(1, demoKeys, 1000)
	for range 100_000 {
		var row struct {
			EmpID int `json:"emp_id"`
		}
		ev := g.Next()
		if err := json.Unmarshal(ev.Key, &row); err != nil {
			t.Fatal(err)
		}
		if row.EmpID <= max(exampleKey, deadLetterKey) {
			t.Fatalf("the demo writer writes emp_id %d, which the banner's inserts use", row.EmpID)
		}
	}
}
