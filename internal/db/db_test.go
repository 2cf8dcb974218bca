package db_test

import (
	"context"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestMigrationsAreIdempotent applies each set of migrations twice: the
// second run changes nothing and fails on nothing. cdcflow's migrations
// create only its own schema: no table of the user's (nor the demo's).
func TestMigrationsAreIdempotent(t *testing.T) {
	ctx := context.Background()
	for _, set := range []struct {
		name   string
		tables int // tables in schema cdcflow after migrating, version table included
	}{{"dest", 4}, {"source", 5}} {
		t.Run(set.name, func(t *testing.T) {
			dsn := testenv.NewDatabase(t, "migrate")
			fsys := migrations.DestFS()
			if set.name == "source" {
				fsys = migrations.SourceFS()
			}
			for range 2 {
				if err := db.Migrate(ctx, dsn, fsys); err != nil {
					t.Fatal(err)
				}
			}
			pool, err := db.Open(ctx, dsn, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			type state struct{ CdcflowTables, MigrationsRecorded, OtherTables int }
			var got state
			err = pool.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM pg_tables WHERE schemaname = 'cdcflow'),
				(SELECT count(*) FROM cdcflow.schema_migrations WHERE version_id > 0),
				(SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('cdcflow', 'pg_catalog', 'information_schema'))`).
				Scan(&got.CdcflowTables, &got.MigrationsRecorded, &got.OtherTables)
			if err != nil {
				t.Fatal(err)
			}
			entries, err := fsDir(set.name)
			if err != nil {
				t.Fatal(err)
			}
			want := state{CdcflowTables: set.tables, MigrationsRecorded: entries}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("after migrating twice (-want +got):\n%s", diff)
			}
		})
	}
}

func fsDir(name string) (int, error) {
	entries, err := migrations.Dest.ReadDir("dest")
	if name == "source" {
		entries, err = migrations.Source.ReadDir("source")
	}
	return len(entries), err
}
