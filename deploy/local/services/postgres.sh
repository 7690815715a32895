# PostgreSQL 15 from Debian's packages with TimescaleDB, as our own cluster
# under $STATE/postgres (not the system's), on 127.0.0.1:5432, database nakhon.

PG_PORT=5432
PG_HOME="$STATE/postgres"
PG_DATA="$PG_HOME/data"
PG_SOCKETS="$PG_HOME/sockets"

# Where the cluster lives: $STATE/postgres, unless the postgres user cannot
# reach the checkout (see service_dir). Needs the postgres user, so it runs
# after the install.
postgres_paths() {
  PG_HOME="$(service_dir postgres postgres)"
  PG_DATA="$PG_HOME/data"
  PG_SOCKETS="$PG_HOME/sockets"
}

postgres_install() {
  apt_install "postgresql-$PG_VERSION" "postgresql-client-$PG_VERSION"
  timescaledb_install
}

# From /: the postgres user may not be allowed into the current directory.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U postgres; }

psql_admin() {
  postgres_paths  # the real path: postgres may not traverse the checkout's
  as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKETS" -p "$PG_PORT" -U postgres "$@"
}

postgres_init() {
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  say "creating the PostgreSQL cluster in $PG_DATA"
  mkdir -p "$PG_DATA" "$PG_SOCKETS"
  chown -R postgres:postgres "$PG_HOME"
  chmod 700 "$PG_DATA"
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      >"$LOGS/postgres-initdb.log" 2>&1 \
    || die "initdb" "$LOGS/postgres-initdb.log" "could not create the cluster"
  cat >> "$PG_DATA/postgresql.conf" <<CONF
# Nakhon local stack (deploy/local/services/postgres.sh)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKETS'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 100
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 256MB
wal_compression = on
max_wal_size = 2GB
checkpoint_timeout = 15min
synchronous_commit = on
timezone = 'UTC'
log_timezone = 'UTC'
CONF
  cat > "$PG_DATA/pg_hba.conf" <<CONF
local all postgres trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all postgres 127.0.0.1/32 trust
CONF
}

postgres_start() {
  postgres_paths
  if pid_alive postgres && pg_ready; then postgres_bootstrap; return 0; fi
  if port_open "$PG_PORT"; then
    die "start postgres" "" "port $PG_PORT is taken by a PostgreSQL Nakhon did not start (the system's own cluster?); stop it (pg_ctlcluster $PG_VERSION main stop) or point NAKHON_DB_DSN at it"
  fi
  postgres_init
  mkdir -p "$PG_SOCKETS"; chown postgres:postgres "$PG_SOCKETS"
  # The server writes its log itself, as postgres: keep it beside the data
  # (reachable for postgres) and link it into the logs folder.
  touch "$PG_HOME/postgres.log"; chown postgres:postgres "$PG_HOME/postgres.log"
  [[ "$PG_HOME/postgres.log" -ef "$LOGS/postgres.log" ]] || ln -sfn "$PG_HOME/postgres.log" "$LOGS/postgres.log"
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_HOME/postgres.log" -w -t 60 start >/dev/null \
    || die "start postgres" "$LOGS/postgres.log" "pg_ctl start failed"
  head -1 "$PG_DATA/postmaster.pid" > "$RUN/postgres.pid"
  wait_ready postgres 60 "$LOGS/postgres.log" pg_ready
  postgres_bootstrap
}

# The nakhon role and database, with the timescaledb extension (idempotent).
postgres_bootstrap() {
  psql_admin -d postgres >>"$LOGS/postgres-bootstrap.log" 2>&1 <<'SQL' \
    || die "create role and database nakhon" "$LOGS/postgres-bootstrap.log" "psql failed"
SELECT 'CREATE ROLE nakhon LOGIN PASSWORD ''nakhon'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nakhon')\gexec
SELECT 'CREATE DATABASE nakhon OWNER nakhon'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'nakhon')\gexec
SQL
  psql_admin -d nakhon -c "CREATE EXTENSION IF NOT EXISTS timescaledb" \
      >>"$LOGS/postgres-bootstrap.log" 2>&1 \
    || die "create extension timescaledb" "$LOGS/postgres-bootstrap.log" "psql failed"
}

postgres_stop() {
  postgres_paths
  if pid_alive postgres; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  stop_pid postgres 30
}

# timescaledb_edition: "apache" or "community" (timescale license), as the server reports it.
timescaledb_edition() {
  psql_admin -d nakhon -At -c "SHOW timescaledb.license" 2>/dev/null \
    | sed 's/^timescale$/community/'
}

postgres_status() {
  if pid_alive postgres && pg_ready; then
    local v ed
    v="$(psql_admin -d nakhon -At -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'" 2>/dev/null || true)"
    ed="$(timescaledb_edition || true)"
    echo "postgres    running  127.0.0.1:$PG_PORT  PostgreSQL $PG_VERSION, database nakhon, TimescaleDB $v ($ed edition)"
  else
    echo "postgres    stopped"
  fi
}
