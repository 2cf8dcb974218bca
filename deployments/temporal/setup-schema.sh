#!/bin/sh
# Creates Temporal's databases and brings their schema up to the version of
# the admin-tools image (temporal-sql-tool). Run by the temporal-schema
# one-shot service before the server starts; safe to run again (an upgrade
# runs it with the new image's schema).
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
port=${DB_PORT:-5432}
schema=/etc/temporal/schema/postgresql/v12

for db in temporal temporal_visibility; do
    dir=$schema/temporal/versioned
    [ "$db" = temporal_visibility ] && dir=$schema/visibility/versioned
    tool="temporal-sql-tool --plugin postgres12 --ep $POSTGRES_SEEDS -p $port -u $POSTGRES_USER --db $db"
    if $tool create 2>/dev/null; then
        echo "created database $db"
    else
        echo "database $db exists"
    fi
    $tool setup-schema -v 0.0
    $tool update-schema -d "$dir"
    echo "database $db is up to date"
done
