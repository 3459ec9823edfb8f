"""Reading CSV files as records without loading them: physical lines grouped into records.

A record is one physical line, or several when a quoted field holds line breaks. Records keep
the physical line they start on, for reject reports. A line with an odd number of quotes is
checked with the csv parser: a stray quote inside an unquoted field (`5" tall`) is text, an
open quoted field continues on the next lines. A quote that is never closed would swallow the
rest of the file: after `MAX_RECORD_LINES` lines or `MAX_RECORD_BYTES` bytes (or at a line that
cannot continue it) the first line is reported as an incomplete record and reading resumes on
the line after it.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterable, Iterator
from typing import BinaryIO

UTF8_BOM = b"\xef\xbb\xbf"
DELIMITERS = (",", ";", "\t")
MAX_RECORD_LINES = 100
MAX_RECORD_BYTES = 64 * 1024

# (physical line number it starts on, raw bytes including line breaks, complete?)
RawRecord = tuple[int, bytes, bool]


def physical_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The file's lines (with their line breaks), a UTF-8 byte order mark removed."""
    first = True
    for line in stream:
        if first:
            first = False
            if line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
        yield line


def split_records(
    lines: Iterable[bytes], delimiter: str, first_line: int = 1
) -> Iterator[RawRecord]:
    """Group physical lines into records (see the module docstring)."""
    source = iter(lines)
    replay: deque[bytes] = deque()
    line_no = first_line
    while True:
        line = replay.popleft() if replay else next(source, None)
        if line is None:
            return
        # Fast path: an even number of quotes cannot leave a well-formed field open.
        if not line.count(b'"') & 1 or _state(line, delimiter) != "open":
            yield line_no, line, True
            line_no += 1
            continue
        parts = [line]
        size = len(line)
        state = "open"
        while state == "open" and len(parts) < MAX_RECORD_LINES and size < MAX_RECORD_BYTES:
            more = replay.popleft() if replay else next(source, None)
            if more is None:
                break
            parts.append(more)
            size += len(more)
            state = _state(b"".join(parts), delimiter)
        if state == "complete":
            yield line_no, b"".join(parts), True
            line_no += len(parts)
        else:
            yield line_no, line, False
            line_no += 1
            replay.extendleft(reversed(parts[1:]))


def _state(data: bytes, delimiter: str) -> str:
    """complete: one well-formed row; open: a quoted field is still open; bad: neither."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error:
        # An odd number of quotes means one is unclosed: more lines may close it.
        return "open" if data.count(b'"') & 1 else "bad"
    return "complete" if len(rows) <= 1 else "bad"


def detect_delimiter(header: str) -> str:
    """The delimiter the header line uses most outside quotes: comma, semicolon or tab."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_record(text: str, delimiter: str) -> list[str]:
    """The fields of one record's text; csv.Error if it is not exactly one well-formed row."""
    rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    if len(rows) > 1:
        raise csv.Error("line break outside a quoted field")
    return rows[0] if rows else []


def is_blank(fields: list[str]) -> bool:
    return all(not f.strip() for f in fields)
