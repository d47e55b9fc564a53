"""Reading the billing export: districts.csv, switches.csv, subscribers.csv.

The header names the columns (any order, any case); the delimiter is taken
from the header (comma, semicolon or tab, as spreadsheet programs write
them). Bytes that are not valid in the configured encoding make that row
bad, with its line number, instead of failing the whole file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from announcer.inventory.model import Row, Table, TableError
from announcer.inventory.schema import COLUMNS

_DELIMITERS = (",", ";", "\t")
_ENCODING_HINT = "set [inventory] csv_encoding to the encoding billing writes (for example cp1251)"


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as raw:
        while chunk := raw.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _delimiter(header: str) -> str:
    return max(_DELIMITERS, key=header.count)


def _has_undecodable(cells: list[str]) -> bool:
    # surrogateescape turns undecodable bytes into lone surrogates
    return any(
        not cell.isascii() and any("\udc80" <= ch <= "\udcff" for ch in cell) for cell in cells
    )


def _rows(stream: TextIO, header: list[str], delimiter: str, encoding: str) -> Iterator[Row]:
    reader = csv.reader(stream, delimiter=delimiter)
    width = len(header)
    ended = 1  # the header line, read before the reader started
    for cells in reader:
        line = ended + 1  # where this row starts, even if a quoted cell spans lines
        ended = reader.line_num + 1
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if _has_undecodable(cells):
            yield Row(line, {}, f"not valid {encoding}; {_ENCODING_HINT}")
            continue
        if len(cells) < width:
            missing = ", ".join(header[len(cells) :])
            yield Row(line, {}, f"too few columns: {missing} missing")
            continue
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            yield Row(line, {}, f"{len(cells)} columns where the header has {width}")
            continue
        yield Row(line, {name: cells[i].strip() for i, name in enumerate(header) if name})


def read_table(kind: str, path: Path, encoding: str = "utf-8") -> Table:
    """Open one CSV file; rows are read lazily by iterating ``Table.rows``."""
    if encoding.replace("-", "").replace("_", "").lower() == "utf8":
        encoding = "utf-8-sig"  # also drops the byte-order mark Excel writes
    try:
        stream = path.open(encoding=encoding, errors="surrogateescape", newline="")
    except OSError as exc:
        raise TableError(str(path), f"cannot open: {exc.strerror}") from None
    first = stream.readline()
    if not first.strip():
        stream.close()
        wanted = ",".join(COLUMNS[kind].required)
        raise TableError(str(path), f"empty file; expected a header line such as {wanted}")
    delimiter = _delimiter(first)
    header = [name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter))]
    if _has_undecodable(header):
        stream.close()
        raise TableError(
            str(path),
            f"the header is not valid {encoding.removesuffix('-sig')}; {_ENCODING_HINT}",
        )
    columns = COLUMNS[kind]
    missing = [c for c in columns.required if c not in header]
    if missing:
        stream.close()
        raise TableError(
            str(path),
            f"missing column {', '.join(missing)}; the header has {', '.join(header)}"
            f" but needs {', '.join(columns.required)}",
        )
    ignored = tuple(c for c in header if c and c not in columns.known)
    known_header = [c if c in columns.known else "" for c in header]

    def rows() -> Iterator[Row]:
        with stream:
            yield from _rows(stream, known_header, delimiter, encoding.removesuffix("-sig"))

    return Table(
        kind=kind,
        source=str(path),
        rows=rows(),
        expected_rows=max(0, _count_lines(path) - 1),
        ignored_columns=ignored,
    )
