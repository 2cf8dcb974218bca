package program

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cdcflow/cdcflow/internal/config"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	_, err := Settings("starter", "about", []string{"-h"}, &out, config.LoadStarter)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("Settings(-h) = %v, want ErrHelp", err)
	}
	for _, v := range []string{"TEMPORAL_ADDRESS", "KAFKA_BROKERS", "CDCFLOW_TOPIC", "CDCFLOW_BATCH_MAX_EVENTS", "CDCFLOW_BATCH_MAX_BYTES",
		"CDCFLOW_BATCH_MAX_WAIT", "CDCFLOW_MAX_IN_FLIGHT", "CDCFLOW_GROUP_ID", "CDCFLOW_LOG_LEVEL", "CDCFLOW_PPROF_ADDR"} {
		if !strings.Contains(out.String(), "  "+v+" ") {
			t.Errorf("usage does not list %s:\n%s", v, out.String())
		}
	}
}

func TestArgumentsAreRefused(t *testing.T) {
	_, err := Settings("starter", "about", []string{"extra"}, &bytes.Buffer{}, config.LoadStarter)
	const want = `unexpected argument "extra" (starter is configured by environment variables; see starter -h)`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}
