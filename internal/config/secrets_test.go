package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSecretsList: every password, API key and DSN is a secret.
func TestSecretsList(t *testing.T) {
	for _, c := range []struct {
		spec any
		want []string
	}{
		{Worker{}, []string{"CDCFLOW_DEST_DSN", "CDCFLOW_SOURCE_DSN", "KAFKA_SASL_PASSWORD", "TEMPORAL_API_KEY"}},
		{&Starter{}, []string{"KAFKA_SASL_PASSWORD", "TEMPORAL_API_KEY"}},
		{Capture{}, []string{"CDCFLOW_SOURCE_DSN", "KAFKA_SASL_PASSWORD"}},
		{TemporalClient{}, []string{"TEMPORAL_API_KEY"}},
	} {
		if got := Secrets(c.spec); !slices.Equal(got, c.want) {
			t.Errorf("Secrets(%T) = %v, want %v", c.spec, got, c.want)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSecretFiles: <NAME>_FILE gives a secret's value, without the trailing
// newline; setting both is an error naming both, and never printing the
// secret.
func TestSecretFiles(t *testing.T) {
	t.Run("from files", func(t *testing.T) {
		t.Setenv("CDCFLOW_TABLES", "employees")
		t.Setenv("CDCFLOW_DEST_DSN_FILE", writeFile(t, "postgres://apply:dest-pw@db/dest\n"))
		t.Setenv("CDCFLOW_SOURCE_DSN_FILE", writeFile(t, "host=src password=src-pw\r\n"))
		t.Setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
		t.Setenv("KAFKA_SASL_USERNAME", "cdcflow")
		t.Setenv("KAFKA_SASL_PASSWORD_FILE", writeFile(t, "kafka pw with spaces \n"))
		t.Setenv("TEMPORAL_API_KEY_FILE", writeFile(t, "key-123"))
		w, err := LoadWorker()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ got, want string }{
			{w.DestDSN, "postgres://apply:dest-pw@db/dest"},
			{w.SourceDSN, "host=src password=src-pw"},
			{w.SASLPassword, "kafka pw with spaces "},
			{w.APIKey, "key-123"},
		} {
			if c.got != c.want {
				t.Errorf("got %q, want %q", c.got, c.want)
			}
		}
		tc, err := LoadTemporal()
		if err != nil || tc.APIKey != "key-123" || !tc.UsesTLS() {
			t.Errorf("LoadTemporal = %+v, %v; want the API key from its file, and TLS", tc, err)
		}
	})
	t.Run("the variable itself", func(t *testing.T) {
		t.Setenv("TEMPORAL_API_KEY", "key-456")
		tc, err := LoadTemporal()
		if err != nil || tc.APIKey != "key-456" {
			t.Errorf("LoadTemporal = %+v, %v", tc, err)
		}
	})
	for _, c := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"both", map[string]string{"KAFKA_SASL_PASSWORD": "in-env", "KAFKA_SASL_PASSWORD_FILE": writeFile(t, "in-file")},
			`invalid KAFKA_SASL_PASSWORD_FILE="` + "%s" + `": set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both`},
		{"both, even empty", map[string]string{"TEMPORAL_API_KEY": "", "TEMPORAL_API_KEY_FILE": writeFile(t, "in-file")},
			`invalid TEMPORAL_API_KEY_FILE="%s": set TEMPORAL_API_KEY or TEMPORAL_API_KEY_FILE, not both`},
		{"missing", map[string]string{"CDCFLOW_DEST_DSN_FILE": "/nonexistent/dsn"},
			`invalid CDCFLOW_DEST_DSN_FILE="%s": cannot read the file: no such file or directory`},
		{"empty", map[string]string{"CDCFLOW_DEST_DSN_FILE": writeFile(t, "\n")},
			`invalid CDCFLOW_DEST_DSN_FILE="%s": the file is empty`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("CDCFLOW_TABLES", "employees")
			var file string
			for k, v := range c.env {
				t.Setenv(k, v)
				if strings.HasSuffix(k, "_FILE") {
					file = v
				}
			}
			_, err := LoadWorker()
			want := strings.Replace(c.want, "%s", file, 1)
			if err == nil || err.Error() != want {
				t.Fatalf("LoadWorker: %v, want %q", err, want)
			}
		})
	}
}

// TestErrorsHideSecrets: an invalid secret setting is named, its value is not.
func TestErrorsHideSecrets(t *testing.T) {
	for _, c := range []struct{ err, want string }{
		{invalid("KAFKA_SASL_PASSWORD", "hunter2", "want a password").Error(), `invalid KAFKA_SASL_PASSWORD="****": want a password`},
		{invalid("TEMPORAL_API_KEY", "k", "no").Error(), `invalid TEMPORAL_API_KEY="****": no`},
		{invalid("CDCFLOW_DEST_DSN", "postgres://u:hunter2@h/db", "no").Error(), `invalid CDCFLOW_DEST_DSN="postgres://u:****@h/db": no`},
		{invalid("KAFKA_SASL_PASSWORD", "", "want a password").Error(), `invalid KAFKA_SASL_PASSWORD="": want a password`},
		{invalid("CDCFLOW_TOPIC", "x", "no").Error(), `invalid CDCFLOW_TOPIC="x": no`},
	} {
		if c.err != c.want {
			t.Errorf("got %q, want %q", c.err, c.want)
		}
	}
	// Through LoadCapture: a SASL password without a mechanism.
	t.Setenv("CDCFLOW_TABLES", "employees")
	t.Setenv("KAFKA_SASL_PASSWORD", "hunter2")
	_, err := LoadCapture()
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "KAFKA_SASL_MECHANISM") {
		t.Fatalf("LoadCapture: %v, want an error naming KAFKA_SASL_MECHANISM, without the password", err)
	}
}

// TestRedactDSN: every form of PostgreSQL connection string loses its
// passwords, and only them.
func TestRedactDSN(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"},
		{"postgres://cdc:s3cret@db.example.com:5432/app?sslmode=verify-full", "postgres://cdc:****@db.example.com:5432/app?sslmode=verify-full"},
		{"postgresql://cdc:s3cret@db/app", "postgresql://cdc:****@db/app"},
		{"postgres://cdc:p%40ss@db/app", "postgres://cdc:****@db/app"},
		{"postgres://cdc:p@ss@db/app", "postgres://cdc:****@db/app"},
		{"postgres://cdc:pa/ss@db/app", "postgres://cdc:****@db/app"},
		{"postgres://cdc:pa?ss@db/app", "postgres://cdc:****@db/app"},
		{"postgres://cdc:@db/app", "postgres://cdc:****@db/app"},
		{"postgres://db/app?user=cdc&password=s3cret&sslmode=require", "postgres://db/app?user=cdc&password=****&sslmode=require"},
		{"postgres://db/app?sslpassword=keypw&sslkey=/k.pem", "postgres://db/app?sslpassword=****&sslkey=/k.pem"},
		{"postgres://h1:5432,h2:5433/app?PASSWORD=x", "postgres://h1:5432,h2:5433/app?PASSWORD=****"},
		{"host=db user=cdc password=s3cret dbname=app", "host=db user=cdc password=**** dbname=app"},
		{"host=db password = s3cret dbname=app", "host=db password = **** dbname=app"},
		{"host=db password='s3 cr\\'et' dbname=app", "host=db password=**** dbname=app"},
		{"host=db sslpassword=keypw sslmode=verify-full", "host=db sslpassword=**** sslmode=verify-full"},
		{"host=db user=cdc", "host=db user=cdc"},
		{"", ""},
	} {
		got := RedactDSN(c.dsn)
		if got != c.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", c.dsn, got, c.want)
		}
		for _, secret := range []string{"s3cret", "keypw", "p%40ss", "p@ss", "pa/ss", "pa?ss", "s3 cr"} {
			if strings.Contains(c.dsn, secret) && strings.Contains(got, secret) {
				t.Errorf("RedactDSN(%q) = %q: still holds %q", c.dsn, got, secret)
			}
		}
	}
}
