package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/migrations"
)

const allTypes = `CREATE TABLE public.all_types (
	id        int,
	region    text,
	c_int     int,
	c_big     bigint,
	c_num     numeric,
	c_text    text,
	c_varchar varchar(40),
	c_bool    boolean,
	c_date    date,
	c_ts      timestamptz,
	c_uuid    uuid,
	c_jsonb   jsonb,
	c_bytea   bytea,
	c_ints    int[],
	c_texts   text[],
	PRIMARY KEY (id, region)
)`

// TestColumnTypesRoundTrip: every common column type, NULLs and a 1 MB text
// value arrive exactly, under a composite primary key.
func TestColumnTypesRoundTrip(t *testing.T) {
	for _, mode := range captureModes {
		t.Run("capture="+mode, func(t *testing.T) { columnTypesRoundTrip(t, mode) })
	}
}

func columnTypesRoundTrip(t *testing.T, mode string) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	if _, err := p.source.Exec(ctx, allTypes); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, p.env["CDCFLOW_DEST_DSN"], migrations.DestFS()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.dest.Exec(ctx, allTypes); err != nil {
		t.Fatal(err)
	}
	env := "CDCFLOW_TABLES=public.all_types"
	p.start("worker", env)
	p.start("starter")
	p.startCapture(mode, "all_types", env)

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	_, err := p.source.Exec(ctx, `
		INSERT INTO all_types VALUES
		(1, 'eu', -2147483648, 9223372036854775807, 12345678901234567890.123456789012, 'plain "quoted" \ back\slash, unicode: żółw 🐢',
		 'varchar', true, '2026-02-28', '2026-11-25 10:00:00.123456+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '{"a": [1, 2.5, null, "x"], "b": {"c": true}}', '\x00ff10', '{1,NULL,3}', '{"a b","c,d",NULL}'),
		(2, 'us', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(3, 'eu', 0, 0, -0.000001, '', '', false, '0001-01-01', '1970-01-01 00:00:00+00', '00000000-0000-0000-0000-000000000000',
		 '"just a string"', '\x', '{}', '{}'),
		(4, 'big', 1, 1, 1, $1, 'x', true, '2000-01-01', now(), gen_random_uuid(), '[]', decode(md5($1), 'hex'), '{1}', '{big}')`, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.source.Exec(ctx, `UPDATE all_types SET c_num = 1e-20, c_texts = '{"new"}' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.source.Exec(ctx, `UPDATE all_types SET region = 'apac' WHERE id = 3`); err != nil { // primary-key change
		t.Fatal(err)
	}
	p.waitSame("public.all_types", "id, region", 2*time.Minute)
	var length int
	var nulls int
	if err := p.dest.QueryRow(ctx, `SELECT length(c_text) FROM all_types WHERE id = 4`).Scan(&length); err != nil || length != len(big) {
		t.Fatalf("1 MB text arrived as %d characters (%v)", length, err)
	}
	if err := p.dest.QueryRow(ctx, `SELECT num_nulls(c_int, c_big, c_num, c_text, c_varchar, c_bool, c_date, c_ts, c_uuid, c_jsonb, c_bytea, c_ints, c_texts) FROM all_types WHERE id = 2`).Scan(&nulls); err != nil || nulls != 13 {
		t.Fatalf("row of NULLs has %d NULLs (%v), want 13", nulls, err)
	}
}

var zombie = regexp.MustCompile(`\) Z `)
