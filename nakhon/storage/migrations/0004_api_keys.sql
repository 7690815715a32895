-- API keys for city apps (DESIGN.md, "Identity and tenancy"): each key carries
-- the cities and scopes it may read. Managed with `nakhon api-keys
-- create|list|revoke` (nakhon/api/key_store.py).
--
-- A key is `nk_<id>_<secret>`: the API finds the row by id and compares the
-- SHA-256 of the whole key with key_hash in constant time. Only the hash is
-- stored; the key itself is printed once, at creation.
-- all_cities: the key reads every city, now and future (cities is then empty).

CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,32}$'),
    name         text NOT NULL CHECK (btrim(name) <> ''),
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    all_cities   boolean NOT NULL DEFAULT false,
    cities       text[] NOT NULL DEFAULT '{}',
    scopes       text[] NOT NULL CHECK (
                     cardinality(scopes) > 0
                     AND scopes <@ ARRAY['readings', 'aqi', 'vehicles', 'sensors']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_cities_given CHECK (all_cities OR cardinality(cities) > 0)
);
