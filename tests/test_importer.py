"""Contact import against real Postgres: the messy fixture, re-import, workers, failures.

Also: the bulk number normaliser gives exactly `dialer.phone.normalize`'s results, and the
CSV record splitter keeps records and line numbers right.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberFormat, PhoneNumberType
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dialer.campaigns import service as campaigns
from dialer.campaigns import trunks
from dialer.campaigns.validation import SettingError
from dialer.contacts import importer
from dialer.contacts.bulkphone import BulkNormalizer
from dialer.contacts.csvsource import MAX_RECORD_LINES, detect_delimiter, split_records
from dialer.db import transaction
from dialer.models import Contact, ContactImport, DncNumber, ImportReject
from dialer.phone import InvalidNumber, normalize

FIXTURES = Path(__file__).parent / "fixtures"
MESSY = FIXTURES / "messy_contacts.csv"

# (line, reason) for every rejected row of the messy fixture.
MESSY_REJECTS = [
    (8, "invalid number (no such prefix in its country)"),
    (9, "missing phone number"),
    (10, "invalid number (no such prefix in its country)"),
    (12, "malformed row: 3 fields, the header has 5"),
    (13, "malformed row: not UTF-8 text (byte 17 of the row)"),
    (21, "malformed row: a quoted field is never closed"),
    (24, "not a phone number: no digits"),
]
NY = ["America/New_York"]
# phone -> (first, last, fields, timezones, status, raw phone)
MESSY_CONTACTS = {
    "+12125550101": (
        "José",
        "García",
        {"Address": "12 Main St, Apt 4", "Notes": "vip"},
        NY,
        "pending",
        "+1 212 555 0101",
    ),
    "+12125550102": (
        "Zoë",
        "O'Brien",
        {"Address": "line one\r\nline two; with semicolon", "Notes": 'said "hi"'},
        NY,
        "pending",
        "(212) 555-0102",
    ),
    "+12125550103": ("Łukasz", "Kowalski", {}, NY, "pending", "212.555.0103"),
    "+442079460958": (
        "Amélie",
        "Dubois",
        {"Address": "London"},
        ["Europe/London"],
        "pending",
        "+44 20 7946 0958",
    ),
    "+12125550106": (
        "Nguyễn",
        "Văn",
        {"Address": 'PO Box 5; Suite "A"'},
        NY,
        "pending",
        "+1-212-555-0106",
    ),
    "+12125550199": ("On", "Dnc", {}, NY, "dnc", "+12125550199"),
    "+12125550107": ("Campaign", "Dnc", {}, NY, "dnc", "+12125550107"),
    "+12125550108": ("Other", "CampaignDnc", {}, NY, "pending", "+12125550108"),
    "+12125550110": ("Stray", "Quote", {"Address": '5" tall'}, NY, "pending", "+12125550110"),
    "+12125550109": ("After", "Broken", {}, NY, "pending", "+12125550109"),
}


def _campaign(session: Session, name: str, trunk: str = "MC") -> int:
    if session.scalar(text("SELECT id FROM trunks WHERE name = :n"), {"n": trunk}) is None:
        trunks.add(session, trunk, cps=10, max_channels=10)
    return campaigns.create(
        session,
        name,
        campaigns.CampaignChanges(trunk=trunk, caller_id="+12125550100", ivr_file="welcome"),
    ).id


@pytest.fixture
def spring(session_factory: sessionmaker[Session]) -> int:
    """Campaign `spring`, with DNC entries: one global, one its own, one another campaign's."""
    with transaction(session_factory) as session:
        spring_id = _campaign(session, "spring")
        other_id = _campaign(session, "other")
        session.add_all(
            [
                DncNumber(phone_e164="+12125550199"),
                DncNumber(phone_e164="+12125550107", campaign_id=spring_id),
                DncNumber(phone_e164="+12125550108", campaign_id=other_id),
            ]
        )
    return spring_id


def _contacts(session: Session, campaign_id: int) -> dict[str, tuple]:
    rows = session.scalars(select(Contact).where(Contact.campaign_id == campaign_id)).all()
    return {
        c.phone_e164: (c.first_name, c.last_name, c.fields, c.timezones, c.status, c.phone_raw)
        for c in rows
    }


def _rejects(session: Session, import_id: int) -> list[tuple[int, str]]:
    return [
        (r.line_number, r.reason)
        for r in session.scalars(
            select(ImportReject)
            .where(ImportReject.import_id == import_id)
            .order_by(ImportReject.line_number)
        )
    ]


def test_messy_file_is_loaded_with_exact_counts_and_reasons(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    rejects_file = tmp_path / "rejects.csv"
    summary = importer.import_contacts(
        session_factory, "spring", MESSY, rejects_path=rejects_file, workers=1
    )
    assert (summary.rows_total, summary.accepted, summary.on_dnc) == (19, 8, 2)
    assert (summary.duplicates, summary.rejected, summary.blank_lines) == (2, 7, 3)
    with session_factory() as session:
        assert _contacts(session, spring) == MESSY_CONTACTS
        record = session.get(ContactImport, summary.import_id)
        assert record is not None
        assert (record.status, record.error, record.filename) == ("completed", None, MESSY.name)
        assert (record.rows_total, record.accepted, record.on_dnc) == (19, 8, 2)
        assert (record.duplicates, record.rejected) == (2, 7)
        assert record.finished_at is not None
        assert _rejects(session, summary.import_id) == MESSY_REJECTS
        raw_by_line = {
            r.line_number: r.raw
            for r in session.scalars(
                select(ImportReject).where(ImportReject.import_id == summary.import_id)
            )
        }
    assert raw_by_line[12] == "2125550104;Only;Three"
    assert raw_by_line[13] == "+12125550105;Bad\ufffd;Bytes;;"
    assert raw_by_line[24] == "abc;Not;ANumber;;"
    with rejects_file.open(encoding="utf-8", newline="") as written:
        rows = list(csv.reader(written))
    assert rows[0] == ["line", "reason", "raw"]
    assert [(int(line), reason) for line, reason, _ in rows[1:]] == MESSY_REJECTS
    assert rows[1][2] == "555-1234;Bad;Number;;"
    # In the file a spreadsheet would take "+1..." for a formula: it is quoted there only.
    assert dict((int(line), raw) for line, _, raw in rows[1:])[13] == "'" + raw_by_line[13]


def test_reimporting_the_same_file_adds_nothing(
    session_factory: sessionmaker[Session], spring: int
) -> None:
    first = importer.import_contacts(session_factory, "spring", MESSY, workers=1)
    second = importer.import_contacts(session_factory, "spring", MESSY, workers=1)
    assert second.previous_import_id == first.import_id
    assert (second.rows_total, second.accepted, second.on_dnc) == (19, 0, 0)
    assert (second.duplicates, second.rejected) == (12, 7)
    with session_factory() as session:
        assert _contacts(session, spring) == MESSY_CONTACTS
        # The first import keeps its contacts; the second one's record says why it added none.
        owners = session.execute(
            select(Contact.import_id, func.count()).group_by(Contact.import_id)
        ).all()
        assert owners == [(first.import_id, len(MESSY_CONTACTS))]
        assert _rejects(session, second.import_id) == MESSY_REJECTS


def test_worker_processes_give_the_same_result(
    session_factory: sessionmaker[Session], spring: int
) -> None:
    with transaction(session_factory) as session:
        parallel_id = _campaign(session, "parallel")
        session.add(DncNumber(phone_e164="+12125550107", campaign_id=parallel_id))
    inline = importer.import_contacts(session_factory, "spring", MESSY, workers=1)
    pooled = importer.import_contacts(session_factory, "parallel", MESSY, workers=2)
    assert {**pooled.as_dict(), "seconds": 0, "import_id": 0, "campaign": ""} == {
        **inline.as_dict(),
        "seconds": 0,
        "import_id": 0,
        "campaign": "",
    }
    with session_factory() as session:
        assert _contacts(session, parallel_id) == _contacts(session, spring)
        assert _rejects(session, pooled.import_id) == MESSY_REJECTS


def test_a_large_file_through_workers_keeps_first_occurrences(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path, monkeypatch
) -> None:
    # Several batches and segments: duplicates across them must still keep the first row.
    monkeypatch.setattr(importer, "CHUNK_RECORDS", 700)
    monkeypatch.setattr(importer, "SEGMENT_ROWS", 2000)
    path = tmp_path / "big.csv"
    lines = ["phone,name"]
    for i in range(6000):
        lines.append(f"+1212555{i % 4000:04d},row {i + 2}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = importer.import_contacts(session_factory, "spring", path, workers=2)
    assert (summary.rows_total, summary.duplicates, summary.rejected) == (6000, 2000, 0)
    assert summary.accepted + summary.on_dnc == 4000
    with session_factory() as session:
        names = dict(
            session.execute(
                select(Contact.phone_e164, Contact.first_name).where(Contact.campaign_id == spring)
            ).all()
        )
    assert len(names) == 4000
    assert all(names[f"+1212555{i:04d}"] == f"row {i + 2}" for i in range(4000))


def test_an_import_broken_half_way_loads_nothing_and_says_failed(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_RECORDS", 500)
    monkeypatch.setattr(importer, "SEGMENT_ROWS", 1000)
    path = tmp_path / "list.csv"
    path.write_text(
        "phone\n" + "".join(f"+1212555{i:04d}\n" for i in range(5000)), encoding="utf-8"
    )
    calls = []

    def fail_after_some_segments(position: int) -> None:
        calls.append(position)
        if len(calls) == 7:  # two segments are inserted by now
            raise OSError(5, "Input/output error")

    rejects_file = tmp_path / "rejects.csv"
    with pytest.raises(importer.ImportFailed) as caught:
        importer.import_contacts(
            session_factory,
            "spring",
            path,
            workers=1,
            rejects_path=rejects_file,
            progress=fail_after_some_segments,
        )
    assert "Input/output error" in str(caught.value)
    with session_factory() as session:
        record = session.get(ContactImport, caught.value.import_id)
        assert record is not None
        assert record.status == "failed"
        assert "Input/output error" in (record.error or "")
        assert record.rows_total == 0
        assert session.scalar(select(func.count()).select_from(Contact)) == 0
        assert session.scalar(select(func.count()).select_from(ImportReject)) == 0
    assert not rejects_file.exists()
    assert not Path(f"{rejects_file}.partial").exists()


UNUSABLE_HEADERS = [
    (b"", "empty"),
    (b"\n\n", "empty"),
    (b"mobile,name\n+12125550101,Ann\n", "no 'phone' column"),
    (b"phone,phone\n+12125550101,+12125550102\n", "appears twice"),
    (b"ph\xffone\n+12125550101\n", "not UTF-8"),
]


def test_unusable_header_fails_the_import_record(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    for content, message in UNUSABLE_HEADERS:
        path.write_bytes(content)
        with pytest.raises(importer.ImportFailed, match=message) as caught:
            importer.import_contacts(session_factory, "spring", path, workers=1)
        with session_factory() as session:
            record = session.get(ContactImport, caught.value.import_id)
            assert record is not None and record.status == "failed"
            assert message in (record.error or "")
            assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_header_spellings_tabs_and_phone_column(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    path = tmp_path / "export.tsv"
    path.write_text(
        "Customer\tMobile Number\tFirstName\tSurname\n"
        "C1\t07400 123456\tMia\tJones\n"
        "C2\t+12125550111\tNoah\tSmith\n",
        encoding="utf-8",
    )
    summary = importer.import_contacts(
        session_factory, "spring", path, phone_column="mobile number", region="GB", workers=1
    )
    assert (summary.accepted, summary.rejected) == (2, 0)
    with session_factory() as session:
        contacts = _contacts(session, spring)
    assert contacts["+447400123456"][:3] == ("Mia", "Jones", {"Customer": "C1"})
    assert contacts["+12125550111"][:2] == ("Noah", "Smith")


def test_full_name_column_becomes_the_first_name(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    path = tmp_path / "names.csv"
    path.write_text("name,phone\nAna María López,+12125550112\n", encoding="utf-8")
    importer.import_contacts(session_factory, "spring", path, workers=1)
    with session_factory() as session:
        first, last, fields, *_ = _contacts(session, spring)["+12125550112"]
    assert (first, last, fields) == ("Ana María López", None, {})


# A spreadsheet's "CSV" export in Windows-1252: accented names, and one row with a byte
# (0x81) that is no character in cp1252 either.
CP1252_FILE = (
    "first_name,last_name,city,phone\n".encode("cp1252")
    + "Zoë,Müller,Zürich,+12125550121\n".encode("cp1252")
    + "José,,,+12125550122\n".encode("cp1252")
    + b"Ren\xe9e,Bad\x81Byte,Caf\xe9,+12125550123\n"
    + b"Ann,Plain,Paris,+12125550124\n"
)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cp1252_file_loads_with_its_encoding(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path, workers: int
) -> None:
    path, rejects_file = tmp_path / "excel.csv", tmp_path / "rejects.csv"
    path.write_bytes(CP1252_FILE)
    summary = importer.import_contacts(
        session_factory,
        "spring",
        path,
        encoding="cp1252",
        rejects_path=rejects_file,
        workers=workers,
    )
    assert (summary.rows_total, summary.accepted, summary.rejected) == (4, 3, 1)
    with session_factory() as session:
        names = {phone: row[:3] for phone, row in _contacts(session, spring).items()}
        assert _rejects(session, summary.import_id) == [
            (4, "malformed row: not cp1252 text (byte 10 of the row)")
        ]
    assert names == {
        "+12125550121": ("Zoë", "Müller", {"city": "Zürich"}),
        "+12125550122": ("José", None, {}),
        "+12125550124": ("Ann", "Plain", {"city": "Paris"}),
    }
    # The rejects file is UTF-8: the row's other characters read as cp1252 text.
    assert list(csv.reader(rejects_file.read_text(encoding="utf-8").splitlines())) == [
        ["line", "reason", "raw"],
        [
            "4",
            "malformed row: not cp1252 text (byte 10 of the row)",
            "Renée,Bad\ufffdByte,Café,+12125550123",
        ],
    ]


def test_a_cp1252_file_read_as_utf8_rejects_its_accented_rows(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(CP1252_FILE)
    summary = importer.import_contacts(session_factory, "spring", path, workers=1)
    assert (summary.rows_total, summary.accepted, summary.rejected) == (4, 1, 3)
    with session_factory() as session:
        assert list(_contacts(session, spring)) == ["+12125550124"]
        assert _rejects(session, summary.import_id) == [
            (2, "malformed row: not UTF-8 text (byte 3 of the row)"),
            (3, "malformed row: not UTF-8 text (byte 4 of the row)"),
            (4, "malformed row: not UTF-8 text (byte 4 of the row)"),
        ]


def test_a_header_is_read_in_the_files_encoding(
    session_factory: sessionmaker[Session], spring: int, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("phone;Société\n+12125550125;Café Noël\n".encode("latin-1"))
    with pytest.raises(importer.ImportFailed, match="not UTF-8 text; name the file's encoding"):
        importer.import_contacts(session_factory, "spring", path, workers=1)
    importer.import_contacts(session_factory, "spring", path, encoding="latin-1", workers=1)
    with session_factory() as session:
        assert _contacts(session, spring)["+12125550125"][2] == {"Société": "Café Noël"}


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "'klingon' is not a text encoding Python knows"),
        ("base64", "'base64' is not a text encoding Python knows"),
        ("utf-16", "'utf-16' cannot be read row by row"),
        ("iso2022_jp", "'iso2022_jp' cannot be read row by row"),
    ],
)
def test_an_unusable_encoding_is_refused_before_anything_is_recorded(
    session_factory: sessionmaker[Session], spring: int, encoding: str, message: str
) -> None:
    with pytest.raises(SettingError, match=message) as caught:
        importer.import_contacts(session_factory, "spring", MESSY, encoding=encoding, workers=1)
    assert caught.value.field == "encoding"
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ContactImport)) == 0


def test_import_into_a_final_campaign_is_refused(
    session_factory: sessionmaker[Session], spring: int
) -> None:
    with transaction(session_factory) as session:
        campaigns.transition(session, "spring", "stop")
    with pytest.raises(importer.ImportFailed, match="cancelled"):
        importer.import_contacts(session_factory, "spring", MESSY, workers=1)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ContactImport)) == 0


# The bulk normaliser must agree with dialer.phone.normalize on every input.


def _examples() -> list[phonenumbers.PhoneNumber]:
    """phonenumbers' example numbers of every region and type: valid numbers worldwide."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                found.append(example)
    return found


EXAMPLES = _examples()
FORMATS = (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL)


def _random_input(rng: random.Random, codes: list[int]) -> str:
    digits = "0123456789"
    if rng.random() < 0.3:
        # A real number with its last digits changed, written as people write them.
        example = rng.choice(EXAMPLES)
        national = str(example.national_number)
        keep = max(1, len(national) - rng.randint(1, 4))
        tail = "".join(rng.choice(digits) for _ in range(len(national) - keep))
        changed = phonenumbers.PhoneNumber(
            country_code=example.country_code,
            national_number=int(national[:keep] + tail),
            italian_leading_zero=example.italian_leading_zero,
        )
        return phonenumbers.format_number(changed, rng.choice(FORMATS))

    def run(low: int, high: int) -> str:
        return "".join(rng.choice(digits) for _ in range(rng.randint(low, high)))

    roll = rng.random()
    if roll < 0.25:
        return "+1" + run(9, 11)
    if roll < 0.45:
        return f"+{rng.choice(codes)}{run(4, 13)}"
    if roll < 0.6:
        d = run(10, 10)
        return rng.choice(
            [d, f"({d[:3]}) {d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}", f"1-{d}", f"1 {d}"]
        )
    if roll < 0.7:
        number = run(4, 12)
        return f"+{rng.choice(codes)} {number[:3]} {number[3:]}"
    if roll < 0.8:
        return rng.choice(["0", "00", "011", "8", "810", "+0"]) + run(4, 13)
    if roll < 0.9:
        return "".join(rng.choice("0123456789+-() .x#ext,;") for _ in range(rng.randint(0, 18)))
    return " " + run(1, 18) + "  "


def _outcome(function, raw: str):
    try:
        number = function(raw)
    except InvalidNumber as exc:
        return ("invalid", str(exc))
    return ("ok", number.e164, number.timezones)


@pytest.mark.parametrize(("region", "seed"), [("US", 1), ("GB", 2), ("DE", 3), ("IN", 4)])
def test_bulk_normaliser_matches_the_reference(region: str, seed: int) -> None:
    rng = random.Random(seed)
    codes = sorted(COUNTRY_CODE_TO_REGION_CODE)
    bulk = BulkNormalizer(region)
    inputs = [_random_input(rng, codes) for _ in range(5_000)]
    expected = [_outcome(lambda r: normalize(r, region), raw) for raw in inputs]
    # Twice: the second pass answers from the caches built by the first.
    for _ in range(2):
        got = [_outcome(bulk.normalize, raw) for raw in inputs]
        assert [(i, g, e) for i, g, e in zip(inputs, got, expected, strict=True) if g != e] == []
    # The sample is not mostly rejects: valid numbers of many countries are compared too.
    assert sum(1 for outcome in expected if outcome[0] == "ok") > 1200


def test_split_records_joins_quoted_line_breaks_and_recovers_from_open_quotes() -> None:
    lines = [b"a,b\n", b'x,"multi\n', b'line",z\n', b'5" tall,q\n', b'"open,never\n']
    lines += [b"c,d\n"] * (MAX_RECORD_LINES + 5)
    records = list(split_records(lines, ","))
    assert records[:4] == [
        (1, b"a,b\n", True),
        (2, b'x,"multi\nline",z\n', True),
        (4, b'5" tall,q\n', True),
        (5, b'"open,never\n', False),
    ]
    # Reading resumes on the line after the one with the unclosed quote.
    assert records[4:] == [(n, b"c,d\n", True) for n in range(6, 6 + MAX_RECORD_LINES + 5)]


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("phone,name", ","),
        ("phone;name;city", ";"),
        ("phone\tname", "\t"),
        ('"last, first";phone', ";"),
        ("phone", ","),
    ],
)
def test_detect_delimiter(header: str, delimiter: str) -> None:
    assert detect_delimiter(header) == delimiter
