"""Reading CSV files as records without loading them: physical lines grouped into records.

A record is one physical line, or several when a quoted field holds line breaks. Records keep
the physical line they start on, for reject reports. A line with an odd number of quotes is
checked with the csv parser: a stray quote inside an unquoted field (`5" tall`) is text, an
open quoted field continues on the next lines. A quote that is never closed would swallow the
rest of the file: after `MAX_RECORD_LINES` lines or `MAX_RECORD_BYTES` bytes (or at a line that
cannot continue it) the first line is reported as an incomplete record and reading resumes on
the line after it.

Records are split on bytes, before they are decoded: the file's encoding must write quotes,
separators and line breaks as single ASCII bytes (UTF-8, cp1252, latin-1 and the like;
`file_encoding` refuses the others). Each record is then decoded on its own, so a row that is
not valid text in that encoding is rejected alone.
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from dialer.campaigns.validation import SettingError

UTF8 = "utf-8"
UTF8_BOM = b"\xef\xbb\xbf"
DELIMITERS = (",", ";", "\t")
MAX_RECORD_LINES = 100
MAX_RECORD_BYTES = 64 * 1024

# (physical line number it starts on, raw bytes including line breaks, complete?)
RawRecord = tuple[int, bytes, bool]

# ASCII text that some codecs read as something else: all of ASCII (UTF-16 and EBCDIC read it
# otherwise), then the shift and escape sequences of ISO-2022, HZ, UTF-7, unicode-escape and
# IDNA. An encoding that reads each of them as plain ASCII can be split on bytes.
_ASCII_PROBES = (
    bytes(range(128)),
    b'\x1b$B"",;\x1b(B',
    b'~{"",;~}',
    b"+ACI-",
    b"\\x22\\u0022",
    b"xn--caf-dma",
)


def file_encoding(name: str) -> str:
    """The codec to decode a file's records with, for an encoding name (utf-8, cp1252, latin-1).

    SettingError if Python knows no such encoding, or if it cannot be read record by record
    (see the module docstring). utf-8-sig is utf-8: a byte order mark is skipped anyway.
    """
    try:
        codec = codecs.lookup(name.strip()).name
        splittable = all(_reads_as_ascii(probe, codec) for probe in _ASCII_PROBES)
    except (LookupError, ValueError):  # unknown, not a text encoding (base64), a NUL in it
        raise SettingError(
            "encoding",
            f"{name!r} is not a text encoding Python knows (e.g. utf-8, cp1252, latin-1)",
        ) from None
    if codec in (UTF8, "utf-8-sig"):
        return UTF8
    if not splittable:
        raise SettingError(
            "encoding",
            f"{name!r} cannot be read row by row: its quote, separator and line-break bytes"
            f" are not always those characters; convert the file to UTF-8 first"
            f" (iconv -f {name} -t UTF-8)",
        )
    return codec


def _reads_as_ascii(probe: bytes, codec: str) -> bool:
    try:
        return probe.decode(codec) == probe.decode("ascii")
    except UnicodeError:
        return False


def encoding_label(codec: str) -> str:
    """How reject reasons name the encoding: `UTF-8`, or the codec (`cp1252`)."""
    return "UTF-8" if codec == UTF8 else codec


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
