"""Spreadsheet-safe CSV cells: the rule of `dialer.csvsafe`, and its SQL form in the export."""

from __future__ import annotations

import pytest
from psycopg import sql
from sqlalchemy import Engine

from dialer.csvsafe import neutralise
from dialer.reports.queries import spreadsheet_safe_sql

# (cell, what a spreadsheet-safe CSV holds)
CELLS = [
    # What a spreadsheet would run: quoted.
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("@SUM(1)", "'@SUM(1)"),
    ("-2+3", "'-2+3"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("=", "'="),
    ("+", "'+"),
    ("-", "'-"),
    ("--3", "'--3"),
    ("+-3", "'+-3"),
    ("-1e5", "'-1e5"),
    ("+1 415 555 0100", "'+1 415 555 0100"),
    ("+14155550100\n", "'+14155550100\n"),  # a number then more: not only a number
    ("+\u0661\u0662\u0663", "'+\u0661\u0662\u0663"),  # digits of another script
    ("\t", "'\t"),
    ("\r\nx", "'\r\nx"),
    # Only a number: E.164 phone numbers and signed decimals stay as they are.
    ("+14155550100", "+14155550100"),
    ("+442079460958", "+442079460958"),
    ("+123456789012345", "+123456789012345"),
    ("+1", "+1"),
    ("-3", "-3"),
    ("+2.5", "+2.5"),
    ("-.5", "-.5"),
    ("-3.", "-3."),
    # Anything else is not a formula.
    ("", ""),
    ("Zoë Müller", "Zoë Müller"),
    ("1+1", "1+1"),
    (" =1+1", " =1+1"),
    ("'=1+1", "'=1+1"),
    ("\uff1d1+1", "\uff1d1+1"),  # a full-width equals sign
    ("a\n=1", "a\n=1"),
]


@pytest.mark.parametrize(("cell", "safe"), CELLS, ids=[repr(c) for c, _ in CELLS])
def test_neutralise(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


def test_neutralise_leaves_safe_cells_alone() -> None:
    for _, safe in CELLS:
        assert neutralise(safe) == safe


def test_the_export_sql_gives_the_same_cells(engine: Engine) -> None:
    cells = [cell for cell, _ in CELLS]
    query = sql.SQL(
        "SELECT {safe} FROM unnest(%s::text[]) WITH ORDINALITY AS t(cell, n) ORDER BY n"
    )
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        got = raw.execute(query.format(safe=spreadsheet_safe_sql("cell")), [cells]).fetchall()
        null = raw.execute(
            sql.SQL("SELECT {safe} FROM (SELECT NULL::text AS cell) AS t").format(
                safe=spreadsheet_safe_sql("cell")
            )
        ).fetchall()
    assert [row[0] for row in got] == [safe for _, safe in CELLS]
    assert null == [(None,)]
