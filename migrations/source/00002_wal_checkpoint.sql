-- Log-based capture's checkpoint, written once Kafka acknowledged what it
-- covers: every transaction that commits before wal_through is published,
-- and wal_action_id is the last action_id given to one of their changes.
-- Unlike published_through, it does not start over with an epoch: an
-- action_id stays unique on the source (cdcflow.oversized_changes).

-- +goose Up
ALTER TABLE cdcflow.capture_epoch
    ADD COLUMN wal_through   pg_lsn NOT NULL DEFAULT '0/0',
    ADD COLUMN wal_action_id bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE cdcflow.capture_epoch DROP COLUMN wal_through, DROP COLUMN wal_action_id;
