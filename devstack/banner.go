package main

import (
	"fmt"
	"strings"

	"github.com/cdcflow/cdcflow/internal/config"
)

// The banner's example rows: below the demo writer's keys (demoKeys).
const (
	exampleKey    = 1 // the insert that is applied
	deadLetterKey = 2 // the insert the destination refuses
)

// banner is what devstack prints once the pipeline runs. It never prints a
// password: a DSN given in the environment may hold one.
type banner struct {
	source, dest   string // DSNs
	brokers, topic string
	temporal, ui   string
	namespace      string      // TEMPORAL_NAMESPACE when set
	temporalCLI    string      // directory of the temporal CLI; empty when none was found
	programs       string      // directory of the cdcflow programs, dlq among them
	codec          string      // http://host:port of the codec the Web UI uses
	metrics        [][2]string // program, http://host:port of its metrics and health
}

func (b banner) String() string {
	source, dest := config.RedactDSN(b.source), config.RedactDSN(b.dest)
	var s strings.Builder
	fmt.Fprintf(&s, "\ncdcflow is running. Ctrl-C stops everything.\n\n")
	fmt.Fprintf(&s, "  source       %s\n", source)
	fmt.Fprintf(&s, "  destination  %s\n", dest)
	fmt.Fprintf(&s, "  kafka        %s (topic %s)\n", b.brokers, b.topic)
	fmt.Fprintf(&s, "  temporal     %s\n  web ui       %s\n", b.temporal, b.ui)
	if b.codec != "" {
		fmt.Fprintf(&s, "  codec        %s (the Web UI shows compressed batches through it)\n", b.codec)
	}
	for i, m := range b.metrics {
		label := ""
		if i == 0 {
			label = "metrics"
		}
		fmt.Fprintf(&s, "  %-11s  %-8s %s/metrics  %s/readyz\n", label, m[0], m[1], m[1])
	}

	fmt.Fprintf(&s, "\nInsert a row on the source:\n\n")
	fmt.Fprintf(&s, "  psql %s -c \"INSERT INTO employees VALUES (%d, 'Ada', 'Lovelace', '1815-12-10', 'London', 5000)\"\n",
		shellQuote(source), exampleKey)
	fmt.Fprintf(&s, "\nsee it on the destination:\n\n")
	fmt.Fprintf(&s, "  psql %s -c 'SELECT * FROM employees'\n", shellQuote(dest))
	fmt.Fprintf(&s, "\nand its batch workflow in the Temporal Web UI.\n")

	fmt.Fprintf(&s, "\nIn another terminal, for the temporal CLI and dlq:\n\n")
	fmt.Fprintf(&s, "  export TEMPORAL_ADDRESS=%s\n", shellQuote(b.temporal))
	if b.namespace != "" {
		fmt.Fprintf(&s, "  export TEMPORAL_NAMESPACE=%s\n", shellQuote(b.namespace))
	}
	var path []string
	for _, dir := range []string{b.temporalCLI, b.programs} {
		if dir != "" && (len(path) == 0 || path[0] != dir) {
			path = append(path, shellQuote(dir))
		}
	}
	if len(path) > 0 {
		fmt.Fprintf(&s, "  export PATH=%s:$PATH\n", strings.Join(path, ":"))
	}
	fmt.Fprintf(&s, "  export CDCFLOW_SOURCE_DSN=%s\n", shellQuote(source))
	fmt.Fprintf(&s, "  export CDCFLOW_DEST_DSN=%s\n", shellQuote(dest))
	if source != b.source || dest != b.dest {
		fmt.Fprintf(&s, "  # **** stands for the password of the DSN you gave\n")
	}

	fmt.Fprintf(&s, "\nThen park a change (a dead letter): the destination refuses it and, after\n")
	fmt.Fprintf(&s, "CDCFLOW_MAX_ATTEMPTS tries (a few seconds), dlq lists it:\n\n")
	fmt.Fprintf(&s, "  psql \"$CDCFLOW_DEST_DSN\" -c 'ALTER TABLE employees ADD CONSTRAINT salary_positive CHECK (salary > 0)'\n")
	fmt.Fprintf(&s, "  psql \"$CDCFLOW_SOURCE_DSN\" -c \"INSERT INTO employees VALUES (%d, 'Charles', 'Babbage', '1791-12-26', 'London', -1)\"\n",
		deadLetterKey)
	fmt.Fprintf(&s, "  dlq list\n")
	if b.temporalCLI != "" {
		fmt.Fprintf(&s, "  temporal workflow list --query \"WorkflowType = 'DeadLetter'\"\n")
	}
	fmt.Fprintf(&s, "\nDrop the constraint and replay it:\n\n")
	fmt.Fprintf(&s, "  psql \"$CDCFLOW_DEST_DSN\" -c 'ALTER TABLE employees DROP CONSTRAINT salary_positive'\n")
	fmt.Fprintf(&s, "  dlq replay\n\n")
	return s.String()
}

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,@%+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
