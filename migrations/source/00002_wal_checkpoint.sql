-- Log-based capture's checkpoint, written once Kafka acknowledged what it
-- covers: every transaction that commits before wal_through is published,
-- and wal_action_id is the last action_id given to one of their changes.
-- wal_slot and wal_tables are the slot and the allowlist the checkpoint
-- belongs to: with another slot, or another allowlist (a transaction read
-- again would be numbered otherwise), capture starts a new epoch; wal_slot
-- is '' while trigger capture publishes. Unlike published_through,
-- wal_action_id does not start over with an epoch.

-- +goose Up
ALTER TABLE cdcflow.capture_epoch
    ADD COLUMN wal_through   pg_lsn NOT NULL DEFAULT '0/0',
    ADD COLUMN wal_action_id bigint NOT NULL DEFAULT 0,
    ADD COLUMN wal_slot      text   NOT NULL DEFAULT '',
    ADD COLUMN wal_tables    text   NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE cdcflow.capture_epoch DROP COLUMN wal_through, DROP COLUMN wal_action_id, DROP COLUMN wal_slot, DROP COLUMN wal_tables;
