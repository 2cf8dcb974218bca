#!/bin/sh
# Waits for the Temporal cluster, creates cdcflow's namespace when missing and
# registers cdcflow's search attributes (SEARCH_ATTRIBUTES, as
# name=Type pairs). Run by the temporal-setup one-shot service; safe to run
# again.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${SEARCH_ATTRIBUTES:?}"
retention=${NAMESPACE_RETENTION:-72h}

tries=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "Temporal at $TEMPORAL_ADDRESS is not healthy after 60 tries" >&2
        exit 1
    fi
    sleep 2
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $TEMPORAL_NAMESPACE exists"
else
    temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$TEMPORAL_NAMESPACE" --retention "$retention"
    echo "created namespace $TEMPORAL_NAMESPACE (retention $retention)"
fi

# A namespace just created takes a moment to be served everywhere.
tries=0
until existing=$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$TEMPORAL_NAMESPACE"); do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "cannot list the search attributes of $TEMPORAL_NAMESPACE" >&2
        exit 1
    fi
    sleep 2
done
for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    if printf '%s\n' "$existing" | grep -qw "$name"; then
        echo "search attribute $name exists"
    else
        temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "$type"
        echo "registered search attribute $name ($type)"
    fi
done
