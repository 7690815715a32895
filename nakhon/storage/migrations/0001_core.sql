-- The core tables of DESIGN.md: sensors, readings, positions.
-- Names are contract: Grafana, the API and ad-hoc SQL users read them.

CREATE TABLE sensors (
    sensor_id   text PRIMARY KEY,
    city        text NOT NULL,
    kind        text,
    name        text,
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_seen  timestamptz,
    last_seen   timestamptz,
    -- 'registry' when imported by an operator, 'auto' when first seen in data.
    source      text NOT NULL DEFAULT 'auto'
);
CREATE INDEX sensors_city_idx ON sensors (city);

-- One canonical reading per (sensor, metric, time): the unique key makes a
-- replayed batch a no-op (DESIGN.md, "Delivery guarantee").
CREATE TABLE readings (
    time        timestamptz      NOT NULL,
    sensor_id   text             NOT NULL,
    metric      text             NOT NULL,
    value       double precision NOT NULL,
    city        text             NOT NULL,
    CONSTRAINT readings_key UNIQUE (sensor_id, metric, time)
);
-- 700 readings/s for a city of 20,000 sensors is ~60 M rows a day; 6-hour
-- chunks keep the hot chunk and its index well inside memory.
SELECT create_hypertable('readings', 'time', chunk_time_interval => INTERVAL '6 hours');
CREATE INDEX readings_city_metric_time_idx ON readings (city, metric, time DESC);

CREATE TABLE positions (
    time        timestamptz      NOT NULL,
    vehicle_id  text             NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    speed_kmh   double precision,
    heading     double precision,
    city        text             NOT NULL,
    CONSTRAINT positions_key UNIQUE (vehicle_id, time)
);
SELECT create_hypertable('positions', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX positions_city_time_idx ON positions (city, time DESC);
