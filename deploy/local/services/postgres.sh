# PostgreSQL 15 from Debian's packages with TimescaleDB, as our own cluster
# under $STATE/postgres (not the system's), on 127.0.0.1:5432, database nakhon.
#
# Logins (docs/security.md, "Database roles"): nakhon_owner, nakhon_writer and
# nakhon_reader, with passwords generated once per checkout (nakhon db
# init-roles) and their DSNs in $ENV_FILE. The superuser postgres is reached
# only through the unix socket, as the postgres OS user (peer), for
# administration; never over TCP.

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
}

# postgres_hba: write the cluster's pg_hba.conf; succeeds only when it changed
# (an older checkout trusted postgres over TCP: that goes on the next start).
postgres_hba() {
  local want
  want="# Written by deploy/local/services/postgres.sh; edits are overwritten.
local all postgres peer
local all all scram-sha-256
host  all postgres 127.0.0.1/32 reject
host  all all 127.0.0.1/32 scram-sha-256"
  [[ "$(cat "$PG_DATA/pg_hba.conf" 2>/dev/null)" == "$want" ]] && return 1
  printf '%s\n' "$want" > "$PG_DATA/pg_hba.conf"
  chown postgres:postgres "$PG_DATA/pg_hba.conf"; chmod 600 "$PG_DATA/pg_hba.conf"
}

postgres_start() {
  postgres_paths
  if pid_alive postgres && pg_ready; then
    if postgres_hba; then
      as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null \
        || die "reload postgres" "$LOGS/postgres.log" "pg_ctl reload failed"
    fi
    postgres_bootstrap; return 0
  fi
  if port_open "$PG_PORT"; then
    die "start postgres" "" "port $PG_PORT is taken by a PostgreSQL Nakhon did not start (the system's own cluster?); stop it (pg_ctlcluster $PG_VERSION main stop) or point the NAKHON_DB_*DSN settings at it"
  fi
  postgres_init
  postgres_hba || true
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

# The database nakhon with the timescaledb extension, and the roles with their
# generated passwords (idempotent). An older checkout's single login `nakhon`
# (password `nakhon`) hands what it owns to nakhon_owner and is dropped.
postgres_bootstrap() {
  local log="$LOGS/postgres-bootstrap.log"
  psql_admin -d postgres >>"$log" 2>&1 <<'SQL' \
    || die "create database nakhon" "$log" "psql failed"
SELECT 'CREATE DATABASE nakhon'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'nakhon')\gexec
SQL
  psql_admin -d nakhon -c "CREATE EXTENSION IF NOT EXISTS timescaledb" >>"$log" 2>&1 \
    || die "create extension timescaledb" "$log" "psql failed"
  # The SQL carries SCRAM verifiers only; the passwords stay in $ENV_FILE.
  { "$REPO/.venv/bin/nakhon" db init-roles --env-file "$ENV_FILE" --port "$PG_PORT" \
      --database nakhon --legacy-role nakhon 2>>"$log" | psql_admin -d nakhon >>"$log" 2>&1; } \
    || die "create the database roles" "$log" "nakhon db init-roles or psql failed"
  chmod 700 "$SECRETS"
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
