"""Database errors classified once, by SQLSTATE: retry, or isolate and reject.

Transient: the same write may succeed later (connection lost, deadlock,
serialization failure, server out of resources, shutting down). Everything else
is permanent for the rows that caused it. An error we cannot classify is
treated as permanent: retrying it forever would stall the partition, while
isolating it costs only a bisection of the batch.
"""

from __future__ import annotations

import psycopg

#: SQLSTATE classes whose errors are worth retrying as they are.
_TRANSIENT_CLASSES = (
    "08",  # connection exception
    "53",  # insufficient resources (disk full, out of memory, too many connections)
    "57",  # operator intervention (admin shutdown, crash shutdown, cannot connect now)
    "58",  # system error (I/O error)
)
_TRANSIENT_CODES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
}


def is_transient(exc: BaseException) -> bool:
    """True when the failed write should simply be retried later."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not getattr(
        exc, "sqlstate", None
    ):
        return True  # no SQLSTATE: the connection itself failed
    code = getattr(exc, "sqlstate", None) or ""
    return code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES
