"""The export's rows as a Parquet file, written batch by batch.

Parquet is what open-data portals and analysts load (pandas, polars, DuckDB,
Spark): typed columns, compressed, read without parsing text. The columns are
the CSV's (:mod:`nakhon.storage.export`), in the same order, typed from the
Table Schema types of the export's fields: ``datetime`` as
``timestamp[us, tz=UTC]`` (PostgreSQL's precision), ``number`` as ``float64``
(the stored double, exactly), ``integer`` as ``int64``, ``string`` as
``string``; the ``unit`` column is added from the metric as in the CSV.

Each batch of the server-side cursor becomes one row group of a
:class:`pyarrow.parquet.ParquetWriter`, so memory holds one batch, never the
file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq

from nakhon.storage.export import Field, unit_of

_TYPES: dict[str, Any] = {
    "datetime": pa.timestamp("us", tz="UTC"),
    "number": pa.float64(),
    "integer": pa.int64(),
    "string": pa.string(),
}


def arrow_schema(fields: Sequence[Field]) -> Any:
    """The Arrow schema of an export's columns (the readings' fields, unit last)."""
    return pa.schema([pa.field(f.name, _TYPES[f.type]) for f in fields])


class ParquetRowsWriter:
    """Query rows (without the unit) to a Parquet file, one row group per batch."""

    def __init__(self, path: Path, fields: Sequence[Field]) -> None:
        self._schema = arrow_schema(fields)
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append ``rows``; a query row lacks the unit, added here from the metric (column 4)."""
        if not rows:
            return
        columns = [list(col) for col in zip(*rows, strict=True)]
        columns.append([unit_of(str(metric)) for metric in columns[3]])
        self._writer.write_batch(pa.record_batch(columns, schema=self._schema))

    def close(self) -> None:
        """Write the footer; a file without it is not a Parquet file."""
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
