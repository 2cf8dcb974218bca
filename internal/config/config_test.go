package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	s, err := LoadStarter()
	if err != nil {
		t.Fatal(err)
	}
	if s.BatchMaxEvents != 2000 || s.BatchMaxBytes != 1<<20 || s.BatchMaxWait != 200*time.Millisecond ||
		s.Topic != "cdcflow.changes" || s.Address != "127.0.0.1:7233" || len(s.Brokers) != 1 {
		t.Fatalf("starter defaults %+v", s)
	}
	w, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Tables) != 1 || w.Tables[0] != "public.employees" || w.TaskQueue != "cdcflow-apply" {
		t.Fatalf("worker defaults %+v", w)
	}
}

func TestInvalidValues(t *testing.T) {
	cases := []struct{ name, value, want string }{
		{"CDCFLOW_BATCH_MAX_EVENTS", "many", `invalid CDCFLOW_BATCH_MAX_EVENTS="many": want int`},
		{"CDCFLOW_BATCH_MAX_EVENTS", "0", `invalid CDCFLOW_BATCH_MAX_EVENTS="0": want 1..100000`},
		{"CDCFLOW_BATCH_MAX_BYTES", "3000000", `invalid CDCFLOW_BATCH_MAX_BYTES="3000000": want 1024..1572864`},
		{"CDCFLOW_BATCH_MAX_WAIT", "soon", `invalid CDCFLOW_BATCH_MAX_WAIT="soon": want a duration such as 200ms or 5s`},
		{"CDCFLOW_BATCH_MAX_WAIT", "-1s", `invalid CDCFLOW_BATCH_MAX_WAIT="-1s": want a positive duration such as 200ms`},
		{"CDCFLOW_MAX_IN_FLIGHT", "0", `invalid CDCFLOW_MAX_IN_FLIGHT="0": want at least 1`},
		{"CDCFLOW_KAFKA_SESSION_TIMEOUT", "10ms", `invalid CDCFLOW_KAFKA_SESSION_TIMEOUT="10ms": want at least 1s`},
		{"CDCFLOW_LOG_LEVEL", "loud", `invalid CDCFLOW_LOG_LEVEL="loud": want debug, info, warn or error`},
		{"CDCFLOW_TOPIC", "", `invalid CDCFLOW_TOPIC="": want a topic name`},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			t.Setenv(c.name, c.value)
			_, err := LoadStarter()
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
	worker := []struct{ name, value, want string }{
		{"CDCFLOW_TABLES", "a.b.c", `invalid CDCFLOW_TABLES="a.b.c": want schema.table, got "a.b.c"`},
		{"CDCFLOW_WORKER_ACTIVITIES", "0", `invalid CDCFLOW_WORKER_ACTIVITIES="0": want at least 1`},
		{"CDCFLOW_MIGRATE", "perhaps", `invalid CDCFLOW_MIGRATE="perhaps": want bool`},
	}
	for _, c := range worker {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			t.Setenv(c.name, c.value)
			_, err := LoadWorker()
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	var spec Starter
	if err := ParseFlags("starter", "about", []string{"-h"}, &spec, &out); err != ErrHelp {
		t.Fatalf("ParseFlags(-h) = %v, want ErrHelp", err)
	}
	for _, v := range []string{"TEMPORAL_ADDRESS", "KAFKA_BROKERS", "CDCFLOW_BATCH_MAX_EVENTS", "CDCFLOW_BATCH_MAX_BYTES",
		"CDCFLOW_BATCH_MAX_WAIT", "CDCFLOW_MAX_IN_FLIGHT", "CDCFLOW_GROUP_ID", "CDCFLOW_LOG_LEVEL", "CDCFLOW_PPROF_ADDR"} {
		if !strings.Contains(out.String(), "  "+v+" ") {
			t.Errorf("usage does not list %s:\n%s", v, out.String())
		}
	}
	if err := ParseFlags("starter", "about", []string{"extra"}, &spec, &out); err == nil ||
		!strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Fatalf("extra argument: %v", err)
	}
}
