"""The ``api_keys`` table: create, list, revoke and look up keys.

Synchronous functions for the CLI, ``make up``, ``nakhon api``'s start
check and tests (:func:`create_api_key` is the one library entry point that
provisions a key), and one async lookup for the API's requests. The key itself is never stored or
logged: only its SHA-256 (see :mod:`nakhon.api.keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from nakhon.api.keys import SCOPES, NewKey, StoredKey, key_matches, new_key, parse_key_id
from nakhon.env_file import read_env_file, update_env_file

_COLUMNS = (
    "id, name, key_hash, all_cities, cities, scopes, created_at, expires_at,"
    " revoked_at, last_used_at"
)

DEFAULT_SCOPES: tuple[str, ...] = ("readings", "aqi", "sensors")


class ApiKeyRequestError(ValueError):
    """A key request the registry refuses (unknown city, bad scope, no such key)."""


def _stored(row: dict[str, Any]) -> StoredKey:
    row = dict(row)
    row["key_hash"] = bytes(row["key_hash"])
    row["cities"] = tuple(row["cities"])
    row["scopes"] = tuple(row["scopes"])
    return StoredKey(**row)


def create_api_key(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    cities: Sequence[str] = (),
    all_cities: bool = False,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    expires_at: datetime | None = None,
) -> tuple[NewKey, StoredKey]:
    """Store a new key; return it (shown once) and its row. Cities must be registered."""
    if all_cities == bool(cities):
        raise ApiKeyRequestError("give one or more cities, or all_cities (not both)")
    if not name.strip():
        raise ApiKeyRequestError("a key needs a name")
    chosen = tuple(dict.fromkeys(scopes))
    if not chosen or set(chosen) - set(SCOPES):
        raise ApiKeyRequestError(f"scopes must be some of {list(SCOPES)}")
    wanted = tuple(dict.fromkeys(cities))
    known = {r[0] for r in conn.execute("SELECT city_id FROM cities WHERE city_id = ANY(%s)",
                                        (list(wanted),))}  # fmt: skip
    missing = [c for c in wanted if c not in known]
    if missing:
        raise ApiKeyRequestError(f"unregistered cities {missing} (see nakhon cities list)")
    key = new_key()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"INSERT INTO api_keys (id, name, key_hash, all_cities, cities, scopes, expires_at)"  # noqa: S608
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (key.id, name, key.key_hash, all_cities, list(wanted), list(chosen), expires_at),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return key, _stored(row)


def list_api_keys(conn: psycopg.Connection[Any]) -> list[StoredKey]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")  # noqa: S608
        return [_stored(r) for r in cur.fetchall()]


def revoke_api_key(conn: psycopg.Connection[Any], key_id: str) -> bool:
    """Revoke ``key_id``; False if there is no such key. Revoking twice keeps the first time."""
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s", (key_id,)
    )
    conn.commit()
    return cur.rowcount == 1


def key_is_active(conn: psycopg.Connection[Any], key: str) -> bool:
    """Whether ``key`` is stored, matches its hash, and is neither expired nor revoked."""
    key_id = parse_key_id(key)
    if key_id is None:
        return False
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s", (key_id,))  # noqa: S608
        row = cur.fetchone()
    if row is None:
        return False
    stored = _stored(row)
    return key_matches(key, stored.key_hash) and stored.active_at(datetime.now(UTC))


def ensure_key_in_env_file(
    conn: psycopg.Connection[Any], env_file: Path, variable: str, name: str
) -> str:
    """The all-cities, all-scopes key in ``env_file``'s ``variable``, made if missing or dead.

    For the local stack (``make up``): the local user's key, kept like the
    stack's other generated credentials (mode 600), never printed.
    """
    current = read_env_file(env_file).get(variable, "")
    if current and key_is_active(conn, current):
        return current
    key, _ = create_api_key(conn, name, all_cities=True, scopes=SCOPES)
    update_env_file(env_file, {variable: key.key})
    return key.key


async def find_api_key(conn: psycopg.AsyncConnection[Any], key_id: str) -> StoredKey | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s", (key_id,))  # noqa: S608
        row = await cur.fetchone()
    return _stored(row) if row else None


def any_active_key(conn: psycopg.Connection[Any]) -> bool:
    """Whether any key is neither revoked nor expired (``nakhon api`` checks it at start)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now()))"
    ).fetchone()
    return bool(row and row[0])
