#!/bin/bash
# Creates the change topic and the dead-letter topic cdcflow needs, or makes
# sure existing ones have its settings. Run by the kafka-topics one-shot
# service. The partition count of an existing topic is left alone: adding
# partitions moves keys to other partitions (see docs/deployment.md).
set -euo pipefail

: "${BOOTSTRAP_SERVER:?}" "${TOPIC:?}" "${DLQ_TOPIC:?}" "${PARTITIONS:?}" "${REPLICATION_FACTOR:?}"
: "${MAX_MESSAGE_BYTES:?}" "${RETENTION_MS:?}"
bin=/opt/kafka/bin
configs="max.message.bytes=$MAX_MESSAGE_BYTES,cleanup.policy=delete,retention.ms=$RETENTION_MS"

for topic in "$TOPIC" "$DLQ_TOPIC"; do
    "$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP_SERVER" --create --if-not-exists --topic "$topic" \
        --partitions "$PARTITIONS" --replication-factor "$REPLICATION_FACTOR" \
        --config "max.message.bytes=$MAX_MESSAGE_BYTES" --config cleanup.policy=delete --config "retention.ms=$RETENTION_MS"
    "$bin/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP_SERVER" --alter --entity-type topics --entity-name "$topic" \
        --add-config "$configs"
    "$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP_SERVER" --describe --topic "$topic"
done
