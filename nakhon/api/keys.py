"""API keys as values: their format, parsing, hashing and what a key may read.

A key is ``nk_<id>_<secret>``: ``id`` finds the stored row, ``secret`` is
``secrets.token_urlsafe(32)`` (256 random bits). Only the SHA-256 of the
whole key is stored. A high-entropy random key needs no slow password hash
(bcrypt, scrypt): those slow down guessing a *low*-entropy password; nobody
brute-forces 2^256, and a fast hash keeps each request's check cheap.
Pure code: no I/O (the table lives in :mod:`nakhon.api.key_store`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

Scope = Literal["readings", "aqi", "vehicles", "sensors"]
SCOPES: tuple[Scope, ...] = get_args(Scope)

PREFIX = "nk_"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 12
# The secret is URL-safe base64 (may hold '_' and '-'): split on the first '_' after the id.
_KEY = re.compile(r"^nk_([a-z0-9]{8,32})_([A-Za-z0-9_-]{32,128})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``key`` is shown once, only ``key_hash`` is stored."""

    id: str
    key: str
    key_hash: bytes


@dataclass(frozen=True, slots=True)
class Grant:
    """What a request may read: ``cities`` None means every city."""

    key_id: str | None
    cities: frozenset[str] | None
    scopes: frozenset[str]

    def sees_city(self, city: str) -> bool:
        return self.cities is None or city in self.cities


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A row of ``api_keys`` (never the key itself)."""

    id: str
    name: str
    key_hash: bytes
    all_cities: bool
    cities: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def grant(self) -> Grant:
        cities = None if self.all_cities else frozenset(self.cities)
        return Grant(self.id, cities, frozenset(self.scopes))


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> NewKey:
    key_id = "".join(secrets.choice(_ID_CHARS) for _ in range(ID_LENGTH))
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, key, hash_key(key))


def parse_key_id(key: str) -> str | None:
    """The id part of a well-formed key, else None (an empty key never parses)."""
    m = _KEY.match(key)
    return m.group(1) if m else None


def key_matches(key: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of the key's hash with the stored one."""
    return hmac.compare_digest(hash_key(key), stored_hash)


def parse_scopes(text: str) -> frozenset[str]:
    """``readings,aqi`` -> the scopes; ValueError names an unknown one."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}: choose from {list(SCOPES)}")
    return scopes
