"""CSV records -> contact rows for the loader, or rejects with a reason (runs in workers).

The output is the staging table's rows in Postgres COPY text format, so the loading process
only forwards bytes. Nothing here touches the database.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from dialer.contacts.bulkphone import BulkNormalizer
from dialer.contacts.csvsource import UTF8, RawRecord, encoding_label, is_blank, parse_record
from dialer.phone import InvalidNumber

# Header spellings recognised as names (compared lower-cased, with spaces and '-' as '_').
FIRST_NAME_COLUMNS = frozenset(
    {"first_name", "firstname", "first", "given_name", "givenname", "forename"}
)
LAST_NAME_COLUMNS = frozenset(
    {"last_name", "lastname", "last", "surname", "family_name", "familyname"}
)
# A single name column is kept as the first name when there is no first-name column.
FULL_NAME_COLUMNS = frozenset({"name", "full_name", "fullname", "contact_name"})

STAGING_COLUMNS = (
    "line_number",
    "phone_e164",
    "phone_raw",
    "first_name",
    "last_name",
    "fields",
    "timezones",
    "reject_reason",
    "raw",
    "alt_phones",
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_NULL = "\\N"


class HeaderError(ValueError):
    """The header row cannot be used; the message says why."""


def header_key(column: str) -> str:
    return column.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True)
class ContactLayout:
    """Where each contact attribute sits in a file's rows, how to decode them and read numbers."""

    delimiter: str
    columns: tuple[str, ...]
    phone: int
    first_name: int | None
    last_name: int | None
    extra: tuple[tuple[int, str], ...]
    region: str
    encoding: str = UTF8  # a codec `csvsource.file_encoding` accepts
    # Columns of other numbers of the contact (index, header), in the order they are tried.
    alt_phones: tuple[tuple[int, str], ...] = ()

    @property
    def width(self) -> int:
        return len(self.columns)

    @classmethod
    def from_header(
        cls,
        names: Sequence[str],
        *,
        delimiter: str,
        phone_column: str,
        region: str,
        encoding: str = UTF8,
        alt_phone_columns: Sequence[str] = (),
    ) -> ContactLayout:
        if any("\x00" in n for n in names):
            # Column names become keys of the contacts' fields, which Postgres cannot store.
            raise HeaderError("the header row contains a NUL character")
        columns = tuple(n.strip() or f"column_{i + 1}" for i, n in enumerate(names))
        keys = [header_key(c) for c in columns]
        seen: set[str] = set()
        for column, key in zip(columns, keys, strict=True):
            if key in seen:
                raise HeaderError(f"column {column!r} appears twice in the header")
            seen.add(key)
        wanted = header_key(phone_column)
        if wanted not in keys:
            raise HeaderError(
                f"no {phone_column!r} column in the header (columns: {', '.join(columns)}); "
                "name the phone column with --phone-column"
            )
        phone = keys.index(wanted)
        alt: list[tuple[int, str]] = []
        for name in alt_phone_columns:
            key = header_key(name)
            if key not in keys:
                raise HeaderError(
                    f"no {name!r} column in the header (columns: {', '.join(columns)}); "
                    "check --alt-phone-columns"
                )
            index = keys.index(key)
            if index == phone or index in (i for i, _ in alt):
                raise HeaderError(f"--alt-phone-columns: column {name!r} is given twice")
            alt.append((index, columns[index]))
        first = _find(keys, FIRST_NAME_COLUMNS, phone)
        last = _find(keys, LAST_NAME_COLUMNS, phone)
        if first is None:
            first = _find(keys, FULL_NAME_COLUMNS, phone)
        used = {phone, first, last, *(i for i, _ in alt)}
        extra = tuple((i, columns[i]) for i in range(len(columns)) if i not in used)
        return cls(delimiter, columns, phone, first, last, extra, region, encoding, tuple(alt))


def _find(keys: list[str], spellings: frozenset[str], phone: int) -> int | None:
    for index, key in enumerate(keys):
        if key in spellings and index != phone:
            return index
    return None


@dataclass
class ChunkResult:
    """What one batch of records became."""

    copy_rows: bytes  # staging rows (contacts and rejects), COPY text format
    rows: int = 0  # data records (blank ones excluded)
    valid: int = 0
    blank: int = 0
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw, reason)


def convert_chunk(
    layout: ContactLayout, normalizer: BulkNormalizer, records: Sequence[RawRecord]
) -> ChunkResult:
    out: list[str] = []
    rejects: list[tuple[int, str, str]] = []
    rows = blank = 0
    delimiter, width, phone = layout.delimiter, layout.width, layout.phone
    first, last = layout.first_name, layout.last_name
    extra = [(i, encode_basestring(name) + ":") for i, name in layout.extra]
    alt_columns = layout.alt_phones
    zone_text: dict[tuple[str, ...], str] = {}
    normalize = normalizer.normalize
    # One decode call per record whatever the encoding: UTF-8 keeps CPython's own fast path.
    encoding = layout.encoding
    not_text = f"malformed row: not {encoding_label(encoding)} text"

    def reject(line_no: int, text: str, reason: str) -> None:
        # Postgres text cannot hold NUL: the raw row keeps a visible stand-in for it.
        raw = text.rstrip("\r\n").replace("\x00", "\ufffd")
        rejects.append((line_no, raw, reason))
        out.append(
            f"{line_no}\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t{_escape(reason)}\t{_escape(raw)}\t\\N\n"
        )

    for line_no, data, complete in records:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            rows += 1
            reject(
                line_no,
                data.decode(encoding, "replace"),
                f"{not_text} (byte {exc.start + 1} of the row)",
            )
            continue
        if not complete:
            rows += 1
            reject(line_no, text, "malformed row: a quoted field is never closed")
            continue
        if not text.strip():
            blank += 1
            continue
        try:
            values = parse_record(text, delimiter)
        except csv.Error as exc:
            rows += 1
            reject(line_no, text, f"malformed row: {exc}")
            continue
        if is_blank(values):
            blank += 1
            continue
        rows += 1
        if len(values) != width:
            reject(line_no, text, f"malformed row: {len(values)} fields, the header has {width}")
            continue
        if "\x00" in text:
            reject(line_no, text, "malformed row: contains a NUL character")
            continue
        raw_phone = values[phone]
        try:
            number = normalize(raw_phone)
        except InvalidNumber as exc:
            reject(line_no, text, str(exc))
            continue
        alternates = "{}"
        if alt_columns:
            try:
                alternates = _alternates(values, alt_columns, number.e164, normalize)
            except InvalidNumber as exc:
                reject(line_no, text, str(exc))
                continue
        zones = zone_text.get(number.timezones)
        if zones is None:
            zones = zone_text[number.timezones] = _text_array(number.timezones)
        extras = ",".join(key + encode_basestring(values[i]) for i, key in extra if values[i] != "")
        out.append(
            f"{line_no}\t{number.e164}\t{_escape(raw_phone)}\t"
            f"{_name(values, first)}\t{_name(values, last)}\t"
            f"{_escape('{' + extras + '}')}\t{zones}\t\\N\t\\N\t{alternates}\n"
        )
    return ChunkResult(
        copy_rows="".join(out).encode("utf-8"),
        rows=rows,
        valid=rows - len(rejects),
        blank=blank,
        rejects=rejects,
    )


def _alternates(
    values: list[str], columns: Sequence[tuple[int, str]], first: str,
    normalize: Callable[[str], Any],
) -> str:  # fmt: skip
    """The row's other numbers as a text[] literal, in column order: empty cells and numbers
    given before are left out; one that is not a number rejects the row, naming its column."""
    numbers: list[str] = []
    for index, name in columns:
        raw = values[index].strip()
        if not raw:
            continue
        try:
            e164 = normalize(raw).e164
        except InvalidNumber as exc:
            raise InvalidNumber(f"{name}: {exc}") from None
        if e164 != first and e164 not in numbers:
            numbers.append(e164)
    return _text_array(tuple(numbers))


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return text.translate(_COPY_ESCAPES)


def _name(values: list[str], index: int | None) -> str:
    if index is None:
        return _NULL
    name = values[index].strip()
    return _escape(name) if name else _NULL


def _text_array(items: tuple[str, ...]) -> str:
    # Zone names are [A-Za-z0-9/_+-]: quoting each is enough, nothing needs escaping.
    return "{" + ",".join(f'"{item}"' for item in items) + "}"


# Process-pool plumbing: each worker builds its normaliser (and its caches) once.
_worker: tuple[ContactLayout, BulkNormalizer] | None = None


def init_worker(layout: ContactLayout) -> None:
    global _worker
    _worker = (layout, BulkNormalizer(layout.region))


def convert_in_worker(records: Sequence[RawRecord]) -> ChunkResult:
    if _worker is None:
        raise RuntimeError("init_worker was not called in this process")
    return convert_chunk(_worker[0], _worker[1], records)
