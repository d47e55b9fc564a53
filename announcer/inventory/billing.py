"""Reading the inventory straight from the billing database.

One SQL query per table, from the config; each must return the same column
names as the CSV files (alias them: ``SELECT sw_name AS id, ...``).
SQLAlchemy speaks to PostgreSQL (psycopg) and MySQL/MariaDB (PyMySQL) with
the same code, and streams the rows so a million subscribers never sit in
memory twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from announcer.config import BillingSettings
from announcer.inventory.model import Row, Table, TableError
from announcer.inventory.schema import COLUMNS

_BATCH = 10_000


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _problem(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class BillingReader:
    """Opens one connection for all three queries; close it when done."""

    def __init__(self, settings: BillingSettings) -> None:
        if not settings.url:
            raise TableError("[billing] url", "not set; add the billing database URL to the config")
        self.settings = settings
        timeout = max(1, round(settings.connect_timeout_s))
        try:
            self.engine = sqlalchemy.create_engine(
                settings.url, connect_args={"connect_timeout": timeout}
            )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise TableError("[billing] url", f"cannot use it: {_problem(exc)}") from None
        self._stack = ExitStack()
        try:
            self.connection = self._stack.enter_context(self.engine.connect())
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise TableError(
                "[billing] url", f"cannot connect to the billing database: {_problem(exc)}"
            ) from None

    def close(self) -> None:
        self._stack.close()
        self.engine.dispose()

    def __enter__(self) -> BillingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table(self, kind: str) -> Table:
        """The table for ``kind``; its query runs when ``Table.rows`` is first read.

        Queries run one after another on the one connection: MySQL cannot
        start a query while another still streams its rows.
        """
        key = f"{kind}_query"
        source = f"billing {key}"
        table = Table(kind=kind, source=source, rows=iter(()), unit="row")
        table.rows = self._rows(table, key)
        return table

    def _rows(self, table: Table, key: str) -> Iterator[Row]:
        query: str = getattr(self.settings, key)
        try:
            result = self.connection.execution_options(
                stream_results=True, yield_per=_BATCH
            ).execute(sqlalchemy.text(query))
        except SQLAlchemyError as exc:
            self.connection.rollback()
            raise TableError(
                table.source, f"the query failed: {_problem(exc)}; check [billing] {key}"
            ) from None
        try:
            header = [str(name).lower() for name in result.keys()]  # noqa: SIM118
            columns = COLUMNS[table.kind]
            missing = [c for c in columns.required if c not in header]
            if missing:
                raise TableError(
                    table.source,
                    f"missing column {', '.join(missing)}; the query returns"
                    f" {', '.join(header)}; alias the columns, e.g. SELECT x AS {missing[0]}",
                )
            table.ignored_columns = tuple(c for c in header if c not in columns.known)
            wanted = [(i, name) for i, name in enumerate(header) if name in columns.known]
            for number, values in enumerate(result, start=1):
                yield Row(number, {name: _cell(values[i]) for i, name in wanted})
        except SQLAlchemyError as exc:
            raise TableError(table.source, f"reading rows failed: {_problem(exc)}") from None
        finally:
            result.close()
