#!/bin/sh
# Start the machine's PostgreSQL cluster (Debian's pg_ctlcluster) if it is down
# and make sure the test database exists. Prints the SQLAlchemy URL to use.
set -eu
DB=${1:-miniecs_test}
cluster=$(pg_lsclusters --no-header | head -n1)
[ -n "$cluster" ] || { echo "no PostgreSQL cluster found" >&2; exit 1; }
ver=$(echo "$cluster" | awk '{print $1}')
name=$(echo "$cluster" | awk '{print $2}')
port=$(echo "$cluster" | awk '{print $3}')
if ! echo "$cluster" | grep -q online; then
    pg_ctlcluster "$ver" "$name" start >&2
fi
i=0
until su postgres -c "psql -p $port -Atc 'select 1'" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "PostgreSQL did not start" >&2; exit 1; }
    sleep 0.1
done
# the tests run as root: give root a superuser role (peer authentication)
if ! su postgres -c "psql -p $port -Atc \"select 1 from pg_roles where rolname='root'\"" | grep -q 1; then
    su postgres -c "createuser -p $port -s root" >&2
fi
if ! su postgres -c "psql -p $port -Atc \"select 1 from pg_database where datname='$DB'\"" | grep -q 1; then
    su postgres -c "createdb -p $port $DB" >&2
fi
echo "postgresql+psycopg:///$DB?host=/var/run/postgresql&port=$port"
