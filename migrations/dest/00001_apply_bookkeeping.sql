-- Bookkeeping for the apply path. Everything cdcflow owns lives in the
-- cdcflow schema; replicated tables keep their own shape.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS cdcflow;

-- One row per applied change: the idempotency record. A change found here (by
-- its source epoch and action_id) is skipped and counted as a duplicate.
-- source_committed_at is when the change was committed on the source:
-- replication lag and source-to-destination latency are read from it.
CREATE TABLE cdcflow.processed_events (
    epoch               bigint NOT NULL,
    action_id           bigint NOT NULL,
    applied_at          timestamptz NOT NULL DEFAULT now(),
    source_committed_at timestamptz,
    PRIMARY KEY (epoch, action_id)
);
CREATE INDEX processed_events_applied ON cdcflow.processed_events (applied_at);

-- Per replicated row, the change that last wrote it: its epoch and action_id.
-- A change that orders before it (a lower epoch, or the same epoch and a
-- lower action_id) never overwrites the row. Deleted rows keep their entry as
-- a tombstone (deleted = true) so that a stale insert or update arriving
-- after the delete cannot bring the row back.
CREATE TABLE cdcflow.row_versions (
    table_name text        NOT NULL,
    key        jsonb       NOT NULL,
    epoch      bigint      NOT NULL,
    action_id  bigint      NOT NULL,
    deleted    boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);

-- +goose Down
DROP TABLE cdcflow.row_versions;
DROP TABLE cdcflow.processed_events;
