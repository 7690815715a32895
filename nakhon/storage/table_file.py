"""An operator's table file, read the same way for every import (sensors, cities).

UTF-8 (a BOM is allowed), and for CSV a header row, blank lines skipped, each
row named by the line it starts on so an error points at it. What a row
means is the importer's business (:mod:`.sensor_registry`, :mod:`.city_registry`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row (CSV line or JSON/GeoJSON element) was rejected."""

    #: ``line 7`` or ``features[3]``.
    where: str
    #: The field at fault, or None when the row as a whole is.
    field: str | None
    message: str

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.where}: {self.message}"
        return f"{self.where}: {self.field}: {self.message}"


def read_text(path: Path, error: type[Exception]) -> str:
    """The file's text; ``error`` (the importer's own) if it cannot be read or is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc


def csv_table(
    text: str, error: type[Exception], what: str
) -> tuple[list[str], Iterator[tuple[str, list[str]]]]:
    """The header row and the other non-blank rows, each as (``line N``, cells).

    ``error`` is raised for a file CSV cannot read (naming the line) or with
    no header (``what`` names what the file should have been, e.g. "a CSV city list").
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise error(f"line 1: {exc}") from exc
    if header is None:
        raise error(f"the file is empty ({what} starts with a header row)")

    def rows() -> Iterator[tuple[str, list[str]]]:
        line = reader.line_num
        while True:
            first_line = line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise error(f"line {first_line}: {exc}") from exc
            line = reader.line_num
            if any(cell.strip() for cell in row):
                yield f"line {first_line}", row

    return header, rows()
