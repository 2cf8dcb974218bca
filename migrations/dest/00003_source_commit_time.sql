-- When each applied change was committed on the source: replication lag and
-- source-to-destination latency are read from it.

-- +goose Up
ALTER TABLE cdcflow.processed_events ADD COLUMN source_committed_at timestamptz;

-- +goose Down
ALTER TABLE cdcflow.processed_events DROP COLUMN source_committed_at;
