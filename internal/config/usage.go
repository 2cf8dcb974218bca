package config

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

// ErrHelp is returned by ParseFlags when -h was given and usage printed.
var ErrHelp = flag.ErrHelp

// ParseFlags handles the command line, which only knows -h: cdcflow programs
// are configured by the environment. It prints usage to out for -h.
func ParseFlags(program, about string, args []string, spec any, out io.Writer) error {
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return usage(out, program, about, spec)
		}
		return fmt.Errorf("%v (%s is configured by environment variables; see %s -h)", err, program, program)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (%s is configured by environment variables; see %s -h)", fs.Arg(0), program, program)
	}
	return nil
}

func usage(out io.Writer, program, about string, spec any) error {
	fmt.Fprintf(out, "%s: %s\n\nUsage: %s [-h]\n\nEnvironment variables:\n\n", program, about, program)
	tw := tabwriter.NewWriter(out, 1, 0, 2, ' ', 0)
	if err := envconfig.Usagef("", spec, tw, usageFormat); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return ErrHelp
}

const usageFormat = `{{range .}}  {{usage_key .}}{{"\t"}}{{usage_type .}}{{"\t"}}{{if usage_default .}}{{usage_default .}}{{else}}-{{end}}{{"\t"}}{{usage_description .}}
{{end}}`
