"""CSV cells safe to open in a spreadsheet (OWASP's CSV injection advice).

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` as a formula, and some skip a
leading tab or carriage return before deciding: a contact named `=HYPERLINK("http://x","y")`
or `+cmd|' /C calc'!A0` in an export would open a link or run a command on the machine of
whoever opens the file. `neutralise` puts a single quote before such a cell, which makes a
spreadsheet take it as text. What the database stores is never changed: only what is
written to CSV for people.
"""

from __future__ import annotations

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A cell that is only a number cannot run as a formula: a spreadsheet reads it as that number.
# Quoting it would gain nothing and spoil the columns programs read most: an E.164 phone
# number (+14155550100) would no longer be one, nor would a signed amount (-3, +2.5). A formula
# needs a name, a reference or an operator, which a sign, digits and one dot cannot make.
# Plain ASCII regular expression, read the same by Python and by Postgres (`~`).
E164_PATTERN = r"\+[1-9][0-9]{1,14}"
NUMBER_PATTERN = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)"
INERT_PATTERN = f"{E164_PATTERN}|{NUMBER_PATTERN}"
QUOTE = "'"

_INERT = re.compile(INERT_PATTERN)


def neutralise(cell: str) -> str:
    """`cell`, with a single quote before it if a spreadsheet would run it as a formula."""
    if cell.startswith(FORMULA_STARTS) and _INERT.fullmatch(cell) is None:
        return QUOTE + cell
    return cell
