-- Changes that could not be applied, parked for a person to replay or
-- discard. One row per parked change; group_id is the DeadLetter workflow
-- that holds it (the failures of one batch on one table with one class).

-- +goose Up
CREATE TABLE cdcflow.dead_letters (
    id                text        PRIMARY KEY,
    group_id          text        NOT NULL,
    epoch             bigint,                 -- the change's source epoch and action_id,
    action_id         bigint,                 -- NULL for a message that did not decode
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    table_name        text,
    error_class       text        NOT NULL,
    error             text        NOT NULL,
    attempts          integer     NOT NULL,
    first_failed_at   timestamptz NOT NULL,
    last_failed_at    timestamptz NOT NULL,
    batch_workflow_id text        NOT NULL,
    batch_run_id      text        NOT NULL,
    message           bytea       NOT NULL,   -- the Kafka message value as received
    published_at      timestamptz,            -- when it reached the DLQ topic
    state             text        NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'replayed', 'discarded')),
    decided_at        timestamptz,
    outcome           text,                   -- the discard reason, or what the replay did
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_group ON cdcflow.dead_letters (group_id);
CREATE INDEX dead_letters_parked ON cdcflow.dead_letters (created_at) WHERE state = 'parked';

-- +goose Down
DROP TABLE cdcflow.dead_letters;
