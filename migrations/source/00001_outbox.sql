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

-- capture_row is the row trigger. Its arguments are the primary-key columns.
-- A change of primary key becomes a delete of the old key and an insert of
-- the new one, so that the destination can apply every change by key.
-- +goose StatementBegin
CREATE FUNCTION cdcflow.capture_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tbl     text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    new_row jsonb;
    old_row jsonb;
    new_key jsonb;
    old_key jsonb;
BEGIN
    -- Most keys have one column; building those directly avoids running a
    -- query per row.
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        IF TG_NARGS = 1 THEN
            new_key := jsonb_build_object(TG_ARGV[0], new_row -> TG_ARGV[0]);
        ELSE
            SELECT jsonb_object_agg(c, new_row -> c) INTO new_key FROM unnest(TG_ARGV) AS c;
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        IF TG_NARGS = 1 THEN
            old_key := jsonb_build_object(TG_ARGV[0], old_row -> TG_ARGV[0]);
        ELSE
            SELECT jsonb_object_agg(c, old_row -> c) INTO old_key FROM unnest(TG_ARGV) AS c;
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
-- program calls it for every table of its allowlist at start.
-- +goose StatementBegin
CREATE FUNCTION cdcflow.capture_table(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    pk text;
BEGIN
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
                   'FOR EACH ROW EXECUTE FUNCTION cdcflow.capture_row(%s)', tbl, pk);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION cdcflow.capture_table(regclass);
DROP FUNCTION cdcflow.capture_row();
DROP TABLE cdcflow.outbox;
