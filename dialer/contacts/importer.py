"""Contact list import: a CSV file streamed into a campaign's contacts.

The file is read once as records (`dialer.contacts.csvsource`); worker processes turn batches of records
into staging rows (`dialer.contacts.rows`), which are streamed with COPY into a temporary table.
Every `SEGMENT_ROWS` rows, one INSERT ... ON CONFLICT DO NOTHING loads the staged rows in file
order (while the workers convert the next ones), so duplicates - within the file or against
the campaign's contacts - are counted, not loaded, and numbers on the do-not-call list (global
or the campaign's) are loaded as `dnc`. Memory stays flat: only a bounded window of batches is
in flight.

Rows are UTF-8 unless another encoding is given (cp1252, latin-1: those
`csvsource.file_encoding` accepts); a row that is not text in it is rejected alone. The
rejects file is UTF-8 whatever the input, with the cells a spreadsheet would run as formulas
quoted (`dialer.csvsafe`); the database keeps the rejected rows as they were.

The import record is committed as `running` first; the contacts, the rejects and the record's
`completed` status are then written in one transaction. A file that breaks half-way loads
nothing, and its record says `failed` with the error (or stays `running` if the process was
killed), never `completed`.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dialer.campaigns import validation
from dialer.campaigns.service import FINAL_STATUSES
from dialer.campaigns.service import get as get_campaign
from dialer.contacts.bulkphone import BulkNormalizer
from dialer.contacts.csvsource import (
    UTF8,
    RawRecord,
    detect_delimiter,
    encoding_label,
    file_encoding,
    parse_record,
    physical_lines,
    split_records,
)
from dialer.contacts.rows import (
    STAGING_COLUMNS,
    ChunkResult,
    ContactLayout,
    HeaderError,
    convert_chunk,
    convert_in_worker,
    init_worker,
)
from dialer.csvsafe import neutralise
from dialer.db import transaction
from dialer.models import ContactImport, utcnow

log = logging.getLogger(__name__)

CHUNK_RECORDS = 5000
# Rows staged before they are inserted; the workers keep converting meanwhile.
SEGMENT_ROWS = 50_000
# Batches converted ahead of the loader: enough to keep the workers busy while a segment is
# inserted, small enough to keep memory flat (a batch is ~0.5 MB).
WINDOW_BATCHES = 24
# Files smaller than this are converted in-process: starting workers would cost more.
PARALLEL_MIN_BYTES = 2 * 1024 * 1024
# A batch takes well under a second; a worker silent this long has died.
CHUNK_TIMEOUT_S = 120.0

Progress = Callable[[int], None]


class ImportFailed(RuntimeError):
    """The import could not complete; its record (if one was created) says failed."""

    def __init__(self, message: str, import_id: int | None = None) -> None:
        super().__init__(message)
        self.import_id = import_id


@dataclass
class ImportSummary:
    import_id: int
    campaign: str
    filename: str
    status: str
    rows_total: int
    accepted: int  # loaded as pending (will be dialled)
    on_dnc: int  # loaded as dnc (never dialled)
    duplicates: int  # same number earlier in the file or already in the campaign
    rejected: int
    blank_lines: int
    seconds: float
    previous_import_id: int | None  # an earlier import of the very same file
    rejects_file: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_contacts(
    factory: sessionmaker[Session],
    campaign_name: str,
    path: str | os.PathLike[str],
    *,
    phone_column: str = "phone",
    alt_phone_columns: Sequence[str] = (),
    region: str | None = None,
    encoding: str = UTF8,
    rejects_path: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import `path` into the campaign; see the module docstring for the guarantees.

    `encoding`: the file's text encoding; SettingError before anything is recorded if it
    cannot be used.
    """
    started = time.monotonic()
    codec = file_encoding(encoding)
    source = Path(path)
    try:
        size = source.stat().st_size
        checksum = _sha256(source)
    except OSError as exc:
        raise ImportFailed(f"cannot read {source}: {exc.strerror or exc}") from None
    with transaction(factory) as session:
        campaign = get_campaign(session, campaign_name)
        if campaign.status in FINAL_STATUSES:
            raise ImportFailed(
                f"campaign {campaign.name!r} is {campaign.status}; import into a new campaign"
            )
        number_region = validation.region(region) if region else campaign.region
        previous = session.scalar(
            select(ContactImport.id)
            .where(
                ContactImport.campaign_id == campaign.id,
                ContactImport.checksum == checksum,
                ContactImport.status == "completed",
            )
            .order_by(ContactImport.id)
            .limit(1)
        )
        record = ContactImport(campaign_id=campaign.id, filename=source.name, checksum=checksum)
        session.add(record)
        session.flush()
        import_id, campaign_id = record.id, campaign.id

    if workers is None:
        workers = 1 if size < PARALLEL_MIN_BYTES else max(1, os.cpu_count() or 1)
    rejects_tmp = Path(f"{rejects_path}.partial") if rejects_path else None
    try:
        counts = _load(
            factory,
            source,
            import_id=import_id,
            campaign_id=campaign_id,
            phone_column=phone_column,
            alt_phone_columns=alt_phone_columns,
            region=number_region,
            encoding=codec,
            rejects_tmp=rejects_tmp,
            workers=workers,
            progress=progress,
        )
    except BaseException as exc:
        if rejects_tmp is not None:
            rejects_tmp.unlink(missing_ok=True)
        message = _failure_message(exc)
        _mark_failed(factory, import_id, message)
        if isinstance(exc, Exception):
            raise ImportFailed(message, import_id) from exc
        raise
    if rejects_tmp is not None and rejects_path is not None:
        rejects_tmp.replace(rejects_path)
    return ImportSummary(
        import_id=import_id,
        campaign=campaign_name,
        filename=source.name,
        status="completed",
        seconds=round(time.monotonic() - started, 3),
        previous_import_id=previous,
        rejects_file=str(rejects_path) if rejects_path else None,
        **counts,
    )


def _load(
    factory: sessionmaker[Session],
    source: Path,
    *,
    import_id: int,
    campaign_id: int,
    phone_column: str,
    alt_phone_columns: Sequence[str],
    region: str,
    encoding: str,
    rejects_tmp: Path | None,
    workers: int,
    progress: Progress | None,
) -> dict[str, int]:
    with source.open("rb") as stream:
        layout, records = _open_records(
            stream, phone_column=phone_column, region=region, encoding=encoding,
            alt_phone_columns=alt_phone_columns,
        )  # fmt: skip
        rejects_out = rejects_tmp.open("w", newline="", encoding="utf-8") if rejects_tmp else None
        try:
            writer = csv.writer(rejects_out) if rejects_out else None
            if writer:
                writer.writerow(["line", "reason", "raw"])
            # Workers start before the load transaction opens its connection.
            with _converter(layout, workers) as convert, transaction(factory) as session:
                loader = _Loader(session, import_id=import_id, campaign_id=campaign_id)
                loader.run(convert(_batches(records, stream)), writer, progress)
                counts = loader.finish()
            return counts
        finally:
            if rejects_out:
                rejects_out.close()


def _open_records(
    stream: BinaryIO, *, phone_column: str, region: str, encoding: str,
    alt_phone_columns: Sequence[str] = (),
) -> tuple[ContactLayout, Iterator[RawRecord]]:  # fmt: skip
    """The layout read from the header, and the data records after it."""
    lines = physical_lines(stream)
    line_no = 0
    for line in lines:
        line_no += 1
        if line.strip():
            break
    else:
        raise HeaderError("the file is empty: expected a header row (e.g. phone,first_name)")
    try:
        header_text = line.decode(encoding)
    except UnicodeDecodeError:
        raise HeaderError(
            f"the header row is not {encoding_label(encoding)} text;"
            " name the file's encoding with --encoding (e.g. cp1252)"
        ) from None
    delimiter = detect_delimiter(header_text)
    records = split_records(itertools.chain([line], lines), delimiter, first_line=line_no)
    header_line, header_bytes, complete = next(records)
    try:
        if not complete:
            raise HeaderError("the header row has a quoted field that is never closed")
        names = parse_record(header_bytes.decode(encoding), delimiter)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HeaderError(f"the header row (line {header_line}) is malformed: {exc}") from None
    layout = ContactLayout.from_header(
        names, delimiter=delimiter, phone_column=phone_column, region=region, encoding=encoding,
        alt_phone_columns=alt_phone_columns,
    )  # fmt: skip
    return layout, records


Batches = Iterator[tuple[list[RawRecord], int]]
Results = Iterator[tuple[ChunkResult, int]]


def _batches(records: Iterator[RawRecord], stream: BinaryIO) -> Batches:
    """Batches of records, each with the file position reached (for progress)."""
    while batch := list(itertools.islice(records, CHUNK_RECORDS)):
        yield batch, stream.tell()


@contextmanager
def _converter(layout: ContactLayout, workers: int) -> Iterator[Callable[[Batches], Results]]:
    """A function turning batches into results, in order: in-process or in a worker pool."""
    if workers <= 1:
        normalizer = BulkNormalizer(layout.region)
        yield lambda batches: (
            (convert_chunk(layout, normalizer, batch), position) for batch, position in batches
        )
        return
    # fork: workers start at once and share phonenumbers' loaded metadata. They never use the
    # parent's database connections and leave through os._exit, which leaves those intact.
    context = multiprocessing.get_context("fork")
    pool = context.Pool(workers, initializer=init_worker, initargs=(layout,))
    try:
        yield lambda batches: _pooled(pool, batches, window=WINDOW_BATCHES)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _pooled(pool: Any, batches: Batches, *, window: int) -> Results:
    # A bounded window keeps memory flat: the reader never runs far ahead of COPY.
    in_flight: deque[tuple[Any, int]] = deque()
    for batch, position in batches:
        in_flight.append((pool.apply_async(convert_in_worker, (batch,)), position))
        if len(in_flight) >= window:
            yield _result(*in_flight.popleft())
    while in_flight:
        yield _result(*in_flight.popleft())


def _result(pending: Any, position: int) -> tuple[ChunkResult, int]:
    try:
        return pending.get(timeout=CHUNK_TIMEOUT_S), position
    except multiprocessing.TimeoutError:
        raise ImportFailed("a worker process stopped responding") from None


class _Loader:
    """Stages converted rows with COPY and loads them into the campaign, in segments.

    Each segment is COPYed into a temporary table, then inserted in file order; while
    Postgres inserts one segment, the workers convert the next ones. Everything happens in
    the caller's transaction.
    """

    def __init__(self, session: Session, *, import_id: int, campaign_id: int) -> None:
        self.session = session
        self.params = {"import_id": import_id, "campaign_id": campaign_id}
        self.import_id = import_id
        self.totals = dict.fromkeys(("rows", "valid", "rejected", "blank", "accepted", "on_dnc"), 0)
        self.seconds = {"staging": 0.0, "loading": 0.0}

    def run(self, results: Results, writer: Any, progress: Progress | None) -> None:
        session = self.session
        # Sorting one segment by line number fits in memory.
        session.execute(text("SET LOCAL work_mem = '64MB'"))
        session.execute(
            text(
                "CREATE TEMP TABLE import_staging ("
                " line_number integer NOT NULL, phone_e164 text, phone_raw text,"
                " first_name text, last_name text, fields jsonb, timezones text[],"
                " reject_reason text, raw text, alt_phones text[]) ON COMMIT DROP"
            )
        )
        connection = session.connection().connection.driver_connection
        copy_sql = f"COPY import_staging ({', '.join(STAGING_COLUMNS)}) FROM STDIN"
        results = iter(results)
        more = True
        while more:
            staged = 0
            started = time.monotonic()
            with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for result, position in results:
                    copy.write(result.copy_rows)
                    self._count(result)
                    if writer is not None:
                        writer.writerows(
                            (line, neutralise(why), neutralise(raw))
                            for line, raw, why in result.rejects
                        )
                    if progress is not None:
                        progress(position)
                    staged += result.rows
                    if staged >= SEGMENT_ROWS:
                        break
                else:
                    more = False
            loading = time.monotonic()
            self.seconds["staging"] += loading - started
            self._load_segment()
            self.seconds["loading"] += time.monotonic() - loading

    def _count(self, result: ChunkResult) -> None:
        self.totals["rows"] += result.rows
        self.totals["valid"] += result.valid
        self.totals["rejected"] += len(result.rejects)
        self.totals["blank"] += result.blank

    def _load_segment(self) -> None:
        session = self.session
        session.execute(
            text(
                "INSERT INTO import_rejects (import_id, line_number, raw, reason)"
                " SELECT :import_id, line_number, raw, reject_reason FROM import_staging"
                " WHERE reject_reason IS NOT NULL ORDER BY line_number"
            ),
            self.params,
        )
        # In file order, so the first occurrence of a number is the one loaded.
        accepted, on_dnc = session.execute(
            text(
                "WITH inserted AS ("
                "  INSERT INTO contacts (campaign_id, import_id, phone_e164, phone_raw,"
                "    first_name, last_name, fields, timezones, alt_phones, status)"
                "  SELECT :campaign_id, :import_id, s.phone_e164, s.phone_raw, s.first_name,"
                "    s.last_name, s.fields, s.timezones, s.alt_phones,"
                # dnc when every number of the row is listed; else the tick dials the others.
                "    CASE WHEN EXISTS (SELECT 1 FROM dnc_numbers d"
                "      WHERE d.phone_e164 = s.phone_e164"
                "        AND (d.campaign_id IS NULL OR d.campaign_id = :campaign_id))"
                "      AND NOT EXISTS (SELECT 1 FROM unnest(s.alt_phones) AS alt(phone)"
                "        WHERE NOT EXISTS (SELECT 1 FROM dnc_numbers d"
                "          WHERE d.phone_e164 = alt.phone"
                "            AND (d.campaign_id IS NULL OR d.campaign_id = :campaign_id)))"
                "    THEN 'dnc' ELSE 'pending' END"
                "  FROM import_staging s WHERE s.reject_reason IS NULL"
                "  ORDER BY s.line_number"
                "  ON CONFLICT (campaign_id, phone_e164) DO NOTHING"
                "  RETURNING status"
                ") SELECT count(*) FILTER (WHERE status = 'pending'),"
                "  count(*) FILTER (WHERE status = 'dnc') FROM inserted"
            ),
            self.params,
        ).one()
        self.totals["accepted"] += accepted
        self.totals["on_dnc"] += on_dnc
        session.execute(text("TRUNCATE import_staging"))

    def finish(self) -> dict[str, int]:
        """Record the counts on the import row as completed; the counts for the summary."""
        totals = self.totals
        counts = {
            "rows_total": totals["rows"],
            "accepted": totals["accepted"],
            "on_dnc": totals["on_dnc"],
            "duplicates": totals["valid"] - totals["accepted"] - totals["on_dnc"],
            "rejected": totals["rejected"],
        }
        record = self.session.get(ContactImport, self.import_id)
        assert record is not None
        for column, value in counts.items():
            setattr(record, column, value)
        record.status = "completed"
        record.finished_at = utcnow()
        self.session.flush()
        log.info(
            "import %d: %d rows, staging %.2f s, loading %.2f s",
            self.import_id,
            totals["rows"],
            self.seconds["staging"],
            self.seconds["loading"],
        )
        return {**counts, "blank_lines": totals["blank"]}


def _mark_failed(factory: sessionmaker[Session], import_id: int, message: str) -> None:
    with transaction(factory) as session:
        record = session.get(ContactImport, import_id)
        if record is not None:
            record.status = "failed"
            record.error = message
            record.finished_at = utcnow()


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, HeaderError | ImportFailed):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
