"""Reading billing's CSV exports as they really come: BOMs, semicolons, cp1251."""

from __future__ import annotations

from pathlib import Path

import pytest

from announcer.inventory.csv_source import read_table
from announcer.inventory.model import TableError


def rows(
    path: Path, kind: str = "subscribers", encoding: str = "utf-8"
) -> list[tuple[int, object]]:
    table = read_table(kind, path, encoding)
    return [(r.line, r.problem or r.cells) for r in table.rows]


def test_excel_export_with_bom_and_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("\ufeffPhone;Switch;Address\r\n8 916 123-45-67;n1;ул. Ленина, 1\r\n".encode())
    assert rows(path) == [
        (2, {"phone": "8 916 123-45-67", "switch": "n1", "address": "ул. Ленина, 1"})
    ]


def test_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("phone\tswitch\n89161234567\tn1\n")
    assert rows(path) == [(2, {"phone": "89161234567", "switch": "n1"})]


def test_columns_in_any_order_and_extra_columns_noted(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("tariff,switch,phone\ngold,n1,89161234567\n")
    table = read_table("subscribers", path)
    assert [r.cells for r in table.rows] == [{"switch": "n1", "phone": "89161234567"}]
    assert table.ignored_columns == ("tariff",)


def test_row_with_a_quoted_newline_is_reported_at_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text('phone,switch,address\n89161234567,n1,"a\nb"\n89161234568,n1,c\n')
    assert [line for line, _ in rows(path)] == [2, 4]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("phone,switch\n\n89161234567,n1\n\n")
    assert rows(path) == [(3, {"phone": "89161234567", "switch": "n1"})]


def test_short_and_long_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "phone,switch,account\n89161234567\n89161234568,n1,7,extra\n89161234569,n1,8,\n"
    )
    assert rows(path) == [
        (2, "too few columns: switch, account missing"),
        (3, "4 columns where the header has 3"),
        (4, {"phone": "89161234569", "switch": "n1", "account": "8"}),
    ]


def test_cp1251_row_in_a_utf8_file_is_one_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(
        b"phone,switch,address\n"
        b"89161234567,n1,ok\n"
        + "89161234568,n1,ул. Ленина\n".encode("cp1251")
        + b"89161234569,n1,ok\n"
    )
    got = rows(path)
    assert got[0] == (2, {"phone": "89161234567", "switch": "n1", "address": "ok"})
    assert got[1] == (
        3,
        "not valid utf-8; set [inventory] csv_encoding to the encoding billing writes"
        " (for example cp1251)",
    )
    assert got[2][0] == 4


def test_cp1251_file_read_as_cp1251(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("id;name\nnorth;Северный\n".encode("cp1251"))
    assert rows(path, "districts", "cp1251") == [(2, {"id": "north", "name": "Северный"})]


def test_missing_column_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("phone,sw\n89161234567,n1\n")
    with pytest.raises(TableError) as caught:
        read_table("subscribers", path)
    assert str(caught.value) == (
        f"{path}: missing column switch; the header has phone, sw but needs phone, switch"
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"")
    with pytest.raises(TableError, match="empty file; expected a header line such as phone,switch"):
        read_table("subscribers", path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot open: No such file or directory"):
        read_table("subscribers", tmp_path / "nope.csv")


def test_header_in_the_wrong_encoding(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("ид,название\n".encode("cp1251"))
    with pytest.raises(TableError, match="the header is not valid utf-8; set"):
        read_table("districts", path)
