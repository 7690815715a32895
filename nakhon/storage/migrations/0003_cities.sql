-- Cities are registered, not invented (DESIGN.md, "Identity and tenancy"): a
-- reading whose city is not in this table is dead-lettered (`unknown_city`),
-- and `nakhon sensors import` refuses sensors of an unregistered city.
-- Managed with `nakhon cities add|list|import` (nakhon/storage/city_registry.py).
--
-- city_id is what MQTT topics carry (`city/<city_id>/...`) and what readings,
-- positions and sensors store in their `city` column; no hyphen, unlike
-- sensor ids. lat/lon: a centre point of the city (WGS 84), not a boundary.
-- `note` says what of a row is unverified (NULL: nothing flagged).

CREATE TABLE cities (
    city_id     text PRIMARY KEY CHECK (city_id ~ '^[a-z0-9_]{1,64}$'),
    name_en     text NOT NULL CHECK (btrim(name_en) <> ''),
    name_th     text NOT NULL CHECK (btrim(name_th) <> ''),
    province    text NOT NULL CHECK (btrim(province) <> ''),
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cities_position_whole CHECK ((lat IS NULL) = (lon IS NULL))
);

-- The Thai smart cities of DOMAIN.md, and every city the simulator publishes
-- for (nakhon/simulator/fleet.py: bangkok, chiang_mai, khon_kaen, lampang,
-- phuket, rayong). Thai names: the province names as the public province
-- lists give them (th.wikipedia's list of provinces; kongvut/thai-province-data),
-- which the capital towns share. Centres: the approximate ones of DOMAIN.md,
-- hence the note. English names follow the Royal Thai General System
-- spelling of the province (Chon Buri, not Chonburi).
INSERT INTO cities (city_id, name_en, name_th, province, lat, lon, note) VALUES
    ('bangkok', 'Bangkok', 'กรุงเทพมหานคร', 'Bangkok', 13.756, 100.502,
     'lat/lon: approximate centre (DOMAIN.md), unverified; province: Bangkok is a special administrative area, not a changwat'),
    ('chiang_mai', 'Chiang Mai', 'เชียงใหม่', 'Chiang Mai', 18.788, 98.985,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('khon_kaen', 'Khon Kaen', 'ขอนแก่น', 'Khon Kaen', 16.432, 102.824,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('phuket', 'Phuket', 'ภูเก็ต', 'Phuket', 7.880, 98.392,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('chonburi', 'Chon Buri', 'ชลบุรี', 'Chon Buri', 13.361, 100.985,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('rayong', 'Rayong', 'ระยอง', 'Rayong', 12.681, 101.281,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('lampang', 'Lampang', 'ลำปาง', 'Lampang', 18.289, 99.491,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('samut_prakan', 'Samut Prakan', 'สมุทรปราการ', 'Samut Prakan', 13.599, 100.597,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('chachoengsao', 'Chachoengsao', 'ฉะเชิงเทรา', 'Chachoengsao', 13.690, 101.077,
     'lat/lon: approximate centre (DOMAIN.md), unverified'),
    ('nakhon_si_thammarat', 'Nakhon Si Thammarat', 'นครศรีธรรมราช', 'Nakhon Si Thammarat',
     8.432, 99.963, 'lat/lon: approximate centre (DOMAIN.md), unverified')
ON CONFLICT (city_id) DO NOTHING;
