-- Snapshots that log-based capture asks for: the rows a table held before
-- the log capture reads began are copied to the destination by a Snapshot
-- workflow, which a worker with CDCFLOW_SOURCE_DSN starts for each row with
-- no done_at. Capture writes a row for every captured table when it starts
-- a new epoch on a new slot (the log holds nothing before the slot), and for
-- a table added to the allowlist; it deletes the row of a table it no
-- longer captures, so that adding the table again copies it again.
--
-- The copied rows take the version (epoch, action_id): action_id is kept
-- free by capture, below every change it numbers in that epoch, so a
-- change read from the log always wins over the copy of its row, and the
-- copy over every change of an earlier epoch.

-- +goose Up
CREATE TABLE cdcflow.snapshots (
    table_name   text        PRIMARY KEY,
    source_id    uuid        NOT NULL,
    epoch        bigint      NOT NULL,
    action_id    bigint      NOT NULL,
    reason       text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    rows_copied  bigint
);

-- +goose Down
DROP TABLE cdcflow.snapshots;
