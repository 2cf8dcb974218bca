package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

// A secret setting is one whose field is tagged secret:"true": a password,
// an API key, a DSN that may carry a password. Its value may be given as
// the variable itself or, as Docker and Kubernetes secrets are mounted, by
// <NAME>_FILE naming a file that holds it; it is never printed.

// Secrets returns the secret variables spec reads (see Variables), sorted.
func Secrets(spec any) []string {
	var names []string
	walkFields(reflect.TypeOf(spec), func(f reflect.StructField, _ []int) {
		if f.Tag.Get("secret") == "true" {
			names = append(names, f.Tag.Get("envconfig"))
		}
	})
	slices.Sort(names)
	return slices.Compact(names)
}

// walkFields calls fn with every field of t (a struct or a pointer to one)
// that has an envconfig tag, and its index path, descending into embedded
// structs.
func walkFields(t reflect.Type, fn func(f reflect.StructField, index []int)) {
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			path := append(slices.Clone(index), i)
			if name, ok := f.Tag.Lookup("envconfig"); ok && name != "" {
				fn(f, path)
				continue
			}
			if f.Anonymous {
				walk(f.Type, path)
			}
		}
	}
	walk(t, nil)
}

// readSecretFiles sets every secret string field of spec (a pointer to a
// struct) whose <NAME>_FILE variable is set to the content of that file,
// without its trailing newline. Setting both <NAME> and <NAME>_FILE is an
// error naming both.
func readSecretFiles(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	var err error
	walkFields(v.Type(), func(f reflect.StructField, index []int) {
		if err != nil || f.Tag.Get("secret") != "true" || f.Type.Kind() != reflect.String {
			return
		}
		name := f.Tag.Get("envconfig")
		path, ok := os.LookupEnv(name + "_FILE")
		if !ok {
			return
		}
		if _, both := os.LookupEnv(name); both {
			err = &Error{Var: name + "_FILE", Value: path, Reason: "set " + name + " or " + name + "_FILE, not both"}
			return
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			err = &Error{Var: name + "_FILE", Value: path, Reason: "cannot read the file: " + pathless(rerr)}
			return
		}
		value := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if value == "" {
			err = &Error{Var: name + "_FILE", Value: path, Reason: "the file is empty"}
			return
		}
		v.Elem().FieldByIndex(index).SetString(value)
	})
	return err
}

// pathless returns err's message without the path an *os.PathError repeats.
func pathless(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// secretNames are the secret variables of every settings type, so that an
// *Error about one of them never prints its value.
var secretNames = func() map[string]bool {
	m := map[string]bool{}
	for _, spec := range []any{Worker{}, Starter{}, Capture{}, TemporalClient{}} {
		for _, name := range Secrets(spec) {
			m[name] = true
		}
	}
	return m
}()

// Redacted stands for a secret, or the password of a DSN, in what cdcflow
// prints.
const Redacted = "****"

var (
	// A password in a URL's query: password=, sslpassword=.
	queryPassword = regexp.MustCompile(`(?i)([?&](?:ssl)?password=)[^&#]*`)
	// A password in key=value pairs; the value may be quoted.
	keywordPassword = regexp.MustCompile(`(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
)

// RedactDSN returns a PostgreSQL connection string, a URL
// (postgres://user:pass@host/db?sslpassword=...) or key=value pairs
// (password=... host=...), with every password replaced by ****.
func RedactDSN(dsn string) string {
	scheme, rest, isURL := strings.Cut(dsn, "://")
	if !isURL || (scheme != "postgres" && scheme != "postgresql") {
		return keywordPassword.ReplaceAllString(dsn, "${1}"+Redacted)
	}
	// As net/url (and so pgx) reads it: the fragment, then the query, are
	// cut off; the authority ends at the first '/'; the user information
	// ends at its last '@', and its password starts after the first ':'.
	head, query := rest, ""
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		head, query = rest[:i], rest[i:]
	}
	authority, path := head, ""
	if i := strings.IndexByte(head, '/'); i >= 0 {
		authority, path = head[:i], head[i:]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if user, _, ok := strings.Cut(authority[:at], ":"); ok {
			authority = user + ":" + Redacted + authority[at:]
		}
	} else if at := strings.LastIndexByte(rest, '@'); at >= 0 && !strings.Contains(rest[:at], "=") {
		// An '@' past the authority, not in a query's value: a password
		// holding an unescaped '/', '?' or '#'. Hide all from the first ':'.
		if user, _, ok := strings.Cut(rest[:at], ":"); ok {
			return scheme + "://" + user + ":" + Redacted + rest[at:]
		}
	}
	return scheme + "://" + authority + path + queryPassword.ReplaceAllString(query, "${1}"+Redacted)
}

// redactValue returns value as it may be printed for the variable name.
func redactValue(name, value string) string {
	switch {
	case !secretNames[name]:
		return value
	case strings.HasSuffix(name, "_DSN"):
		return RedactDSN(value)
	case value == "":
		return ""
	}
	return Redacted
}
