"""API keys as values (format, parsing, hashing, grants) and the token bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nakhon.api.keys import (
    Grant,
    StoredKey,
    hash_key,
    key_matches,
    new_key,
    parse_key_id,
    parse_scopes,
)
from nakhon.api.rate_limit import RateLimiter, TokenBucket


def test_a_new_key_parses_to_its_id_and_matches_only_itself() -> None:
    key = new_key()
    assert key.key.startswith(f"nk_{key.id}_")
    assert parse_key_id(key.key) == key.id
    assert key.key_hash == hash_key(key.key) and len(key.key_hash) == 32
    assert key_matches(key.key, key.key_hash)
    assert not key_matches(key.key + "x", key.key_hash)
    assert not key_matches(new_key().key, key.key_hash)
    assert new_key().key != key.key


@pytest.mark.parametrize(
    "text",
    ["", "nk_", "nk__", "nk_abc_short", "xx_abcdefgh_" + "a" * 43, "nk_ABCDEFGH_" + "a" * 43,
     "nk_abcdefgh_" + "a" * 43 + " ", "nk_abcdefgh_" + "a" * 20 + "!" + "a" * 22],
)  # fmt: skip
def test_malformed_keys_have_no_id(text: str) -> None:
    assert parse_key_id(text) is None


def test_a_secret_may_hold_underscores() -> None:
    assert parse_key_id("nk_abcdefgh_" + "_a-" * 15) == "abcdefgh"


def _stored(**over: object) -> StoredKey:
    now = datetime.now(UTC)
    values: dict[str, object] = dict(
        id="abcdefgh", name="n", key_hash=b"\0" * 32, all_cities=False,
        cities=("phuket",), scopes=("readings",), created_at=now,
        expires_at=None, revoked_at=None, last_used_at=None,
    )  # fmt: skip
    values.update(over)
    return StoredKey(**values)  # type: ignore[arg-type]


def test_expired_and_revoked_keys_are_not_active() -> None:
    now = datetime.now(UTC)
    assert _stored().active_at(now)
    assert _stored(expires_at=now + timedelta(days=1)).active_at(now)
    assert not _stored(expires_at=now - timedelta(seconds=1)).active_at(now)
    assert not _stored(revoked_at=now).active_at(now)


def test_grants_limit_cities_unless_all_cities() -> None:
    limited = _stored().grant()
    assert limited.sees_city("phuket") and not limited.sees_city("chiang_mai")
    assert _stored(all_cities=True, cities=()).grant().sees_city("anything")
    assert Grant(None, None, frozenset()).sees_city("x")


def test_scopes_parse_and_unknown_ones_are_refused() -> None:
    assert parse_scopes("readings, aqi,,sensors") == {"readings", "aqi", "sensors"}
    with pytest.raises(ValueError, match="everything"):
        parse_scopes("readings,everything")


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token back after 1/rate seconds
    assert bucket.take(0.5) > 0
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refills to burst only
    assert bucket.take(100.0) > 0


def test_rate_limiter_keeps_one_bucket_per_client_and_says_when_to_retry() -> None:
    limiter = RateLimiter(rate=0.5, burst=1)
    assert limiter.check("a", 10.0) == 0
    assert limiter.check("a", 10.0) == 2  # whole seconds, rounded up
    assert limiter.check("b", 10.0) == 0
    assert limiter.check("a", 12.0) == 0


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=10)
    for i in range(100):
        limiter.check(str(i), float(i))
    assert len(limiter._buckets) <= 10
