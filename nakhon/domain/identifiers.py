"""The shapes of the names a reading carries: sensor ids and city ids (docs/architecture.md).

Shared by the processors (which lower-case what arrives), the registries and
the broker's identities, so the rule lives in one place.
"""

from __future__ import annotations

import re

SENSOR_ID = re.compile(r"[a-z0-9_-]{1,64}")
CITY_ID = re.compile(r"[a-z0-9_]{1,64}")


def is_sensor_id(value: str) -> bool:
    """True for 1–64 of ``[a-z0-9_-]``, exactly as stored."""
    return SENSOR_ID.fullmatch(value) is not None


def is_city_id(value: str) -> bool:
    """True for 1–64 of ``[a-z0-9_]``, exactly as stored."""
    return CITY_ID.fullmatch(value) is not None


def valid_sensor_id(sensor_id: str) -> str | None:
    """The lower-cased id if it is 1–64 of ``[a-z0-9_-]``, else None (ids arrive in any case)."""
    lowered = sensor_id.lower()
    return lowered if SENSOR_ID.fullmatch(lowered) else None
