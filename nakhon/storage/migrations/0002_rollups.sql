-- Rollups of readings: readings_1m and readings_1h, the same names and
-- columns on both TimescaleDB editions, so the API and Grafana never care
-- which edition runs:
--     bucket, sensor_id, metric, city, avg, min, max, sum, count, last
-- (`sum` is kept so coarser buckets can be built from finer ones exactly:
-- avg over several rows = sum(sum) / sum(count)). Both are "real time": they
-- include readings newer than the last refresh.
--
-- Community edition: continuous aggregates (materialized_only = false).
-- Refresh, compression and retention policies need settings, so
-- `nakhon maintain` adds them (nakhon/storage/maintenance.py).
--
-- Apache edition: no continuous aggregates, so Nakhon keeps its own
-- materialized hypertables (nakhon_readings_1m_data, nakhon_readings_1h_data)
-- and exposes them through views that add the not-yet-materialized tail
-- from raw readings. A statement-level trigger logs late changes (rows below
-- the invalidation threshold) as (sensor, minute) pairs for
-- `nakhon maintain` to re-aggregate; nakhon/storage/rollups.py explains the
-- protocol.

DO $migration$
BEGIN
IF current_setting('timescaledb.license', true) = 'timescale' THEN
    -- WITH NO DATA: creating a continuous aggregate with data cannot run in a
    -- transaction, and migrations run in one. The refresh policy fills it.
    EXECUTE $sql$
        CREATE MATERIALIZED VIEW readings_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
               sensor_id, metric, city,
               avg(value) AS avg, min(value) AS min, max(value) AS max,
               sum(value) AS sum, count(*) AS count, last(value, time) AS last
        FROM readings
        GROUP BY bucket, sensor_id, metric, city
        WITH NO DATA
    $sql$;
    EXECUTE $sql$
        CREATE MATERIALIZED VIEW readings_1h
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
               sensor_id, metric, city,
               avg(value) AS avg, min(value) AS min, max(value) AS max,
               sum(value) AS sum, count(*) AS count, last(value, time) AS last
        FROM readings
        GROUP BY bucket, sensor_id, metric, city
        WITH NO DATA
    $sql$;
    CREATE INDEX readings_1m_sensor_metric_idx ON readings_1m (sensor_id, metric, bucket);
    CREATE INDEX readings_1m_city_metric_idx ON readings_1m (city, metric, bucket);
    CREATE INDEX readings_1h_sensor_metric_idx ON readings_1h (sensor_id, metric, bucket);
    CREATE INDEX readings_1h_city_metric_idx ON readings_1h (city, metric, bucket);
ELSE
    -- One row: raw readings with time < threshold are either materialized
    -- or logged as invalidations; readings_1m holds every bucket below
    -- minute_until, readings_1h every bucket below hour_until.
    CREATE TABLE nakhon_rollup_state (
        id             boolean PRIMARY KEY DEFAULT true CHECK (id),
        threshold      timestamptz NOT NULL DEFAULT '-infinity',
        minute_until   timestamptz NOT NULL DEFAULT '-infinity',
        hour_until     timestamptz NOT NULL DEFAULT '-infinity',
        refreshed_at   timestamptz
    );
    INSERT INTO nakhon_rollup_state DEFAULT VALUES;

    -- Minutes of a sensor changed below the threshold (late data, replays
    -- that inserted, updates, deletes). No unique key on purpose: concurrent
    -- writers never wait on each other here; the refresh de-duplicates.
    CREATE TABLE nakhon_rollup_invalidations (
        sensor_id  text        NOT NULL,
        bucket     timestamptz NOT NULL
    );
    -- Hours of a sensor whose minutes were re-aggregated and whose hourly
    -- row is still to be rebuilt (kept in a table so a crash loses nothing).
    CREATE TABLE nakhon_rollup_invalidations_1h (
        sensor_id  text        NOT NULL,
        bucket     timestamptz NOT NULL
    );

    CREATE TABLE nakhon_readings_1m_data (
        bucket     timestamptz      NOT NULL,
        sensor_id  text             NOT NULL,
        metric     text             NOT NULL,
        city       text             NOT NULL,
        avg        double precision NOT NULL,
        min        double precision NOT NULL,
        max        double precision NOT NULL,
        sum        double precision NOT NULL,
        count      bigint           NOT NULL,
        last       double precision NOT NULL,
        CONSTRAINT nakhon_readings_1m_data_key UNIQUE (sensor_id, metric, city, bucket)
    );
    PERFORM create_hypertable('nakhon_readings_1m_data', 'bucket',
                              chunk_time_interval => INTERVAL '1 day');
    CREATE INDEX nakhon_readings_1m_data_city_idx
        ON nakhon_readings_1m_data (city, metric, bucket);

    CREATE TABLE nakhon_readings_1h_data (
        bucket     timestamptz      NOT NULL,
        sensor_id  text             NOT NULL,
        metric     text             NOT NULL,
        city       text             NOT NULL,
        avg        double precision NOT NULL,
        min        double precision NOT NULL,
        max        double precision NOT NULL,
        sum        double precision NOT NULL,
        count      bigint           NOT NULL,
        last       double precision NOT NULL,
        CONSTRAINT nakhon_readings_1h_data_key UNIQUE (sensor_id, metric, city, bucket)
    );
    PERFORM create_hypertable('nakhon_readings_1h_data', 'bucket',
                              chunk_time_interval => INTERVAL '30 days');
    CREATE INDEX nakhon_readings_1h_data_city_idx
        ON nakhon_readings_1h_data (city, metric, bucket);

    CREATE VIEW readings_1m AS
        SELECT bucket, sensor_id, metric, city, avg, min, max, sum, count, last
        FROM nakhon_readings_1m_data
        WHERE bucket < (SELECT minute_until FROM nakhon_rollup_state)
        UNION ALL
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
               sensor_id, metric, city,
               avg(value), min(value), max(value), sum(value), count(*), last(value, time)
        FROM readings
        WHERE time >= (SELECT minute_until FROM nakhon_rollup_state)
        GROUP BY 1, sensor_id, metric, city;

    CREATE VIEW readings_1h AS
        SELECT bucket, sensor_id, metric, city, avg, min, max, sum, count, last
        FROM nakhon_readings_1h_data
        WHERE bucket < (SELECT hour_until FROM nakhon_rollup_state)
        UNION ALL
        SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
               sensor_id, metric, city,
               sum(sum) / sum(count), min(min), max(max), sum(sum), sum(count)::bigint,
               last(last, bucket)
        FROM readings_1m
        WHERE bucket >= (SELECT hour_until FROM nakhon_rollup_state)
        GROUP BY 1, sensor_id, metric, city;

    -- Runs once per statement (the processors write a batch per statement),
    -- not per row. The shared advisory lock lets the refresh wait for every
    -- writer that read the old threshold before it aggregates past it.
    CREATE FUNCTION nakhon_log_rollup_invalidations() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    DECLARE
        cutoff timestamptz;
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(86042342870863); -- ROLLUP_LOCK_KEY
        SELECT threshold INTO cutoff FROM nakhon_rollup_state;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO nakhon_rollup_invalidations (sensor_id, bucket)
            SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 minute', time)
            FROM new_rows WHERE time < cutoff;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO nakhon_rollup_invalidations (sensor_id, bucket)
            SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 minute', time)
            FROM old_rows WHERE time < cutoff;
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER readings_rollup_insert AFTER INSERT ON readings
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION nakhon_log_rollup_invalidations();
    CREATE TRIGGER readings_rollup_update AFTER UPDATE ON readings
        REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION nakhon_log_rollup_invalidations();
    CREATE TRIGGER readings_rollup_delete AFTER DELETE ON readings
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION nakhon_log_rollup_invalidations();
END IF;
END
$migration$;
