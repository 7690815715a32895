"""Database errors classified once, by SQLSTATE: which rows, if any, are to blame.

- ``data``: the rows themselves are refused (classes 22 data exception and 23
  integrity constraint violation). Only these are isolated by bisecting the
  batch, and only the guilty payload goes to the dead letters.
- ``retry``: everything else. Either it passes by itself (connection lost,
  deadlock, serialization failure, out of resources, shutting down) or it needs
  an operator (a read-only replica after a failover, permission denied, a
  missing table before ``nakhon migrate``). Either way no row is to blame: the
  batch is retried with capped backoff and its offsets stay uncommitted, so
  nothing is lost and nothing is dead-lettered wholesale. An error we cannot
  classify is retried too, for the same reason: blaming rows for it would move
  the whole stream out of the database.
"""

from __future__ import annotations

from typing import Literal

import psycopg

#: SQLSTATE classes that mean "these rows are refused".
_DATA_CLASSES = ("22", "23")
#: SQLSTATE classes that pass by themselves; the rest of "retry" needs an operator.
_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")

ErrorKind = Literal["data", "retry"]


def classify(exc: psycopg.Error) -> ErrorKind:
    """``data`` when the rows are to blame, else ``retry``."""
    code = exc.sqlstate or ""
    return "data" if code[:2] in _DATA_CLASSES else "retry"


def is_transient(exc: psycopg.Error) -> bool:
    """True when a retry can succeed without anyone's help (for the log's wording)."""
    code = exc.sqlstate or ""
    return not code or code[:2] in _TRANSIENT_CLASSES
