-- Trigger capture on the source: a row trigger on every captured table writes
-- each change to cdcflow.outbox; the capture program publishes outbox rows to
-- Kafka and deletes them once Kafka acknowledged them.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS cdcflow;

-- action_id comes from a sequence, so it increases in the order changes are
-- made. Transactions may commit out of that order; capture does not keep a
-- high-water mark but deletes what it published, so a row that becomes
-- visible late is still read.
CREATE TABLE cdcflow.outbox (
    action_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    key        jsonb       NOT NULL,
    before     jsonb,
    after      jsonb,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- oversized_changes keeps the changes capture did not publish because a row
-- image exceeded its limit (CDCFLOW_MAX_CHANGE_BYTES): capture moves the
-- outbox row here, in the transaction that deletes it from the outbox, after
-- Kafka acknowledged the small event that marks the change as too large (it
-- is dead-lettered as ChangeTooLarge). The row stays for a person to decide;
-- cdcflow never reads it again.
CREATE TABLE cdcflow.oversized_changes (
    action_id    bigint      PRIMARY KEY,
    table_name   text        NOT NULL,
    op           text        NOT NULL,
    key          jsonb       NOT NULL,
    before       jsonb,
    after        jsonb,
    changed_at   timestamptz NOT NULL,
    committed_at timestamptz NOT NULL,
    size_bytes   bigint      NOT NULL, -- the largest row image, as capture counts it
    limit_bytes  bigint      NOT NULL, -- CDCFLOW_MAX_CHANGE_BYTES when it was parked
    parked_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The epoch capture publishes in: every event carries it, and the destination
-- orders and deduplicates changes by (epoch, action_id). Capture starts a new
-- epoch, greater than any before, when this row is missing (a first start, or
-- the cdcflow schema created again), when the source is another cluster or on
-- another timeline than the one recorded (restored or cloned), or when Kafka
-- holds a change of this epoch past published_through that the outbox does
-- not hold (restored to an earlier state). Deleting the row forces a new
-- epoch at the next start.
CREATE TABLE cdcflow.capture_epoch (
    only_row          boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    source_id         uuid        NOT NULL DEFAULT gen_random_uuid(), -- events name their source by it
    epoch             bigint      NOT NULL,   -- microseconds since 1970 when it began
    system_identifier text        NOT NULL,   -- '' where the role may not read it
    timeline          bigint      NOT NULL,   -- 0 likewise
    published_through bigint      NOT NULL DEFAULT 0, -- highest action_id of this epoch published and deleted
    began_at          timestamptz NOT NULL DEFAULT now(),
    reason            text        NOT NULL
);

-- capture_row is the row trigger. Its first argument is the name of the
-- table the trigger was installed on (schema.table), the others are the
-- primary-key columns. The name is an argument because a partitioned table's
-- trigger fires on its partitions, and events name the partitioned table.
-- A change of primary key becomes a delete of the old key and an insert of
-- the new one, so that the destination can apply every change by key.
-- Values are rendered the same whatever the writing session's settings
-- (timestamptz in UTC): one row, one key text, one Kafka key.
-- +goose StatementBegin
CREATE FUNCTION cdcflow.capture_row() RETURNS trigger
LANGUAGE plpgsql
SET timezone TO 'UTC' SET intervalstyle TO 'postgres' SET extra_float_digits TO 1
AS $$
DECLARE
    tbl     text := TG_ARGV[0];
    new_row jsonb;
    old_row jsonb;
    new_key jsonb;
    old_key jsonb;
BEGIN
    -- Most keys have one column; building those directly avoids running a
    -- query per row.
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        IF TG_NARGS = 2 THEN
            new_key := jsonb_build_object(TG_ARGV[1], new_row -> TG_ARGV[1]);
        ELSE
            SELECT jsonb_object_agg(c, new_row -> c) INTO new_key FROM unnest(TG_ARGV[1:]) AS c;
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        IF TG_NARGS = 2 THEN
            old_key := jsonb_build_object(TG_ARGV[1], old_row -> TG_ARGV[1]);
        ELSE
            SELECT jsonb_object_agg(c, old_row -> c) INTO old_key FROM unnest(TG_ARGV[1:]) AS c;
        END IF;
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO cdcflow.outbox (table_name, op, key, after) VALUES (tbl, 'insert', new_key, new_row);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cdcflow.outbox (table_name, op, key, before) VALUES (tbl, 'delete', old_key, old_row);
    ELSIF old_key = new_key THEN
        INSERT INTO cdcflow.outbox (table_name, op, key, before, after) VALUES (tbl, 'update', new_key, old_row, new_row);
    ELSE
        INSERT INTO cdcflow.outbox (table_name, op, key, before) VALUES (tbl, 'delete', old_key, old_row);
        INSERT INTO cdcflow.outbox (table_name, op, key, after) VALUES (tbl, 'insert', new_key, new_row);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- capture_table installs (or refreshes) the trigger on one table; the capture
-- program calls it for every table of its allowlist at start. On a
-- partitioned table the trigger reaches every partition, present and future.
-- +goose StatementBegin
CREATE FUNCTION cdcflow.capture_table(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    pk   text;
    name text;
BEGIN
    SELECT n.nspname || '.' || c.relname INTO name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    SELECT string_agg(quote_literal(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
      INTO pk
      FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF pk IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key; cdcflow captures only tables with one', tbl;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS cdcflow_capture ON %s', tbl);
    EXECUTE format('CREATE TRIGGER cdcflow_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION cdcflow.capture_row(%s, %s)', tbl, quote_literal(name), pk);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION cdcflow.capture_table(regclass);
DROP FUNCTION cdcflow.capture_row();
DROP TABLE cdcflow.capture_epoch;
DROP TABLE cdcflow.oversized_changes;
DROP TABLE cdcflow.outbox;
