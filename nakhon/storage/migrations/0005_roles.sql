-- What each role may do in the schema (docs/security.md, "Database roles").
-- The roles themselves are cluster-wide and hold passwords, so the cluster's
-- administrator creates them first (`nakhon db init-roles`; `make up` does).
-- This migration runs as nakhon_owner, which owns every table here; it only
-- grants, so any deployment gets the same rights:
--   nakhon_writer  the processor and `nakhon maintain`: write readings and
--                  positions, upsert sensors, refresh the Apache edition's
--                  rollups, drop expired chunks. No DDL, no UPDATE or DELETE
--                  of raw data.
--   nakhon_reader  the API and Grafana: SELECT on every table and view, now
--                  and later (default privileges), and nothing else.
-- A later migration that gives the writer a new table grants it there; the
-- reader is covered without one.

DO $check$
BEGIN
    IF (SELECT count(*) FROM pg_roles WHERE rolname IN ('nakhon_writer', 'nakhon_reader')) < 2 THEN
        RAISE EXCEPTION 'the roles nakhon_writer and nakhon_reader do not exist'
            USING HINT = 'create them first with nakhon db init-roles (docs/security.md, "Database roles")';
    END IF;
END
$check$;

-- Only the owner creates objects (PostgreSQL 15 already withholds CREATE on
-- public from PUBLIC; a database made by an older release may not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO nakhon_writer, nakhon_reader;

-- The reader: every table and view, and those later migrations add.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO nakhon_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO nakhon_reader;

-- The writer: the processor's batch (nakhon/storage/writer.py) and its wait
-- for the schema (nakhon/storage/migrate.py, wait_for_schema).
GRANT SELECT ON nakhon_schema_migrations, cities TO nakhon_writer;
GRANT SELECT, INSERT ON readings, positions TO nakhon_writer;
GRANT SELECT, INSERT ON sensors TO nakhon_writer;
GRANT UPDATE (first_seen, last_seen) ON sensors TO nakhon_writer;

-- Apache edition: `nakhon maintain` refreshes Nakhon's own rollup tables
-- (nakhon/storage/rollups.py); the trigger on readings, which runs as the
-- writing role, logs invalidations.
DO $apache$
BEGIN
    IF to_regclass('nakhon_rollup_state') IS NOT NULL THEN
        GRANT SELECT, UPDATE ON nakhon_rollup_state TO nakhon_writer;
        GRANT SELECT, INSERT, DELETE ON nakhon_rollup_invalidations,
            nakhon_rollup_invalidations_1h, nakhon_readings_1m_data, nakhon_readings_1h_data
            TO nakhon_writer;
    END IF;
END
$apache$;

-- Retention on the Apache edition: drop_chunks is the hypertable owner's, so
-- the writer gets this one narrow door instead (nakhon/storage/retention.py):
-- whole chunks of a hypertable in this schema, all older than `keep` before
-- `as_of`, which may not lie in the future.
CREATE FUNCTION nakhon_drop_expired_chunks(relation text, keep interval, as_of timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $fn$
DECLARE
    dropped integer;
BEGIN
    IF NOT EXISTS (SELECT FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = 'public' AND hypertable_name = relation) THEN
        RAISE EXCEPTION 'not a hypertable of the public schema: %', relation
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF keep IS NULL OR keep <= INTERVAL '0' THEN
        RAISE EXCEPTION 'keep must be a positive interval, not %', keep
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT count(*) INTO dropped
    FROM drop_chunks(format('public.%I', relation)::regclass,
                     older_than => least(coalesce(as_of, now()), now()) - keep);
    RETURN dropped;
END
$fn$;
REVOKE ALL ON FUNCTION nakhon_drop_expired_chunks(text, interval, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nakhon_drop_expired_chunks(text, interval, timestamptz) TO nakhon_writer;
