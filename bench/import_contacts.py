"""Benchmark: import a generated contact list (default 1,000,000 rows) and print rows/s and RSS.

    .venv/bin/python bench/import_contacts.py [--rows N] [--seed S] [--workers W]

Generates a CSV in a temporary directory (deterministic for a seed): about 80% US numbers with
assigned area codes in assorted formats (E.164, (212) 555-0123, 212.555.0123, 1-212-..., bare
digits), 5% foreign mobile numbers, 5% NANP numbers with random (mostly unassigned) area codes,
5% missing or non-numeric phones, 5% repeats of earlier rows, all with non-ASCII names. It creates its own throwaway database (migrated with dialer.migrate) on the
server named by DIALER_BENCH_SERVER_URL (default: the local Postgres), puts a few thousand of
the numbers on the do-not-call list, imports the file through `dialer.contacts.importer`, prints the
figures, and drops the database.

Peak RSS: `resource.getrusage` maxrss of this process (RUSAGE_SELF) and of the largest worker
(RUSAGE_CHILDREN, which reports the largest terminated child, not a sum). Forked workers share
pages with the parent, so the sum self + workers x largest child over-counts; it is printed
as an upper bound. The peak of the summed proportional set size (PSS, shared pages divided
among the processes sharing them) of the importer and its workers, sampled every 0.1 s from
/proc, is the figure without double counting.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import phonenumbers
import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from stopping import exit_on_sigterm  # noqa: E402

from dialer import migrate
from dialer.campaigns import service as campaigns
from dialer.campaigns import trunks
from dialer.contacts import importer
from dialer.db import make_engine, make_sessionmaker, transaction

SERVER_URL = os.environ.get(
    "DIALER_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIRST_NAMES = ("Ana", "José", "Zoë", "Łukasz", "Mia", "Noah", "Søren", "Aiyana", "Chloé", "Omar")
LAST_NAMES = ("García", "Müller", "O'Brien", "Nguyễn", "Smith", "Kowalski", "Dubois", "Jones")


def generate(path: Path, rows: int, seed: int) -> list[str]:
    """Write the CSV; return a sample of its E.164 numbers for the do-not-call list."""
    if not AREA_CODES:
        AREA_CODES.extend(_valid_area_codes())
    rng = random.Random(seed)
    recent: list[str] = []
    dnc: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("phone,first_name,last_name,email,customer_id\n")
        for i in range(rows):
            phone = _phone(rng, recent)
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            out.write(f"{phone},{first},{last},{first.lower()}.{i}@example.com,C{i:07d}\n")
            if i % 500 == 0 and phone.startswith("+1"):
                dnc.append(phone)
    return dnc


def _valid_area_codes() -> list[int]:
    """NANP area codes phonenumbers accepts (checked with one ordinary exchange)."""
    codes = []
    for area in range(200, 1000):
        number = phonenumbers.parse(f"+1{area}2345678")
        if phonenumbers.is_valid_number(number):
            codes.append(area)
    return codes


AREA_CODES: list[int] = []
# Mobile ranges abroad: country code, leading digits, digits after them.
INTERNATIONAL = ((44, "7", 9), (49, "151", 8), (33, "6", 8), (61, "4", 8), (52, "1", 10))


def _phone(rng: random.Random, recent: list[str]) -> str:
    roll = rng.random()
    if roll < 0.05 and recent:
        return rng.choice(recent)  # duplicate of an earlier row
    if roll < 0.08:
        return ""  # missing
    if roll < 0.10:
        return rng.choice(("n/a", "unknown", "12", "+", "555-CALL-NOW", "0000000000000000000"))
    if roll < 0.15:
        # Unassigned or impossible NANP numbers.
        return f"+1{rng.randint(100, 999)}{rng.randint(0, 9999999):07d}"
    if roll < 0.20:
        cc, lead, rest = rng.choice(INTERNATIONAL)
        return f"+{cc}{lead}{rng.randrange(10**rest):0{rest}d}"
    area = rng.choice(AREA_CODES)
    exchange, line = rng.randint(200, 999), rng.randint(0, 9999)
    digits = f"{area}{exchange}{line:04d}"
    style = rng.random()
    if style < 0.5:
        phone = f"+1{digits}"
    elif style < 0.7:
        phone = f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    elif style < 0.85:
        phone = f"{digits[:3]}.{digits[3:6]}.{digits[6:]}"
    elif style < 0.95:
        phone = f"1-{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    else:
        phone = digits
    if len(recent) < 1000:
        recent.append(phone)
    else:
        recent[rng.randrange(1000)] = phone
    return phone


class PssSampler(threading.Thread):
    """Peak summed PSS (MB) of this process and its children, sampled from /proc."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _family(os.getpid())))

    def stop(self) -> float:
        self._done.set()
        self.join(timeout=5)
        return self.peak_kb / 1024


def _family(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return pids


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _admin(statement: sql.Composable) -> None:
    conninfo = make_url(SERVER_URL).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(statement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    args = parser.parse_args()

    name = f"dialer_bench_import_{uuid.uuid4().hex[:8]}"
    database_url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory(prefix="dialer-bench-") as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        t0 = time.monotonic()
        dnc_numbers = generate(csv_path, args.rows, args.seed)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:.1f} MB) in {time.monotonic() - t0:.1f} s")
        _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        engine = make_engine(database_url)
        try:
            migrate.upgrade(database_url)
            factory = make_sessionmaker(engine)
            with transaction(factory) as session:
                trunks.add(session, "MC", cps=50, max_channels=100)
                campaigns.create(
                    session,
                    "bench",
                    campaigns.CampaignChanges(
                        trunk="MC", caller_id="+12125550100", ivr_file="welcome"
                    ),
                )
                session.execute(
                    text("INSERT INTO dnc_numbers (phone_e164) SELECT unnest(CAST(:n AS text[]))"),
                    {"n": sorted({n for n in dnc_numbers if len(n) == 12})},
                )
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            sampler = PssSampler()
            sampler.start()
            started = time.monotonic()
            summary = importer.import_contacts(factory, "bench", csv_path, workers=args.workers)
            elapsed = time.monotonic() - started
            peak_pss = sampler.stop()
            self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            workers = args.workers or os.cpu_count() or 1
            print(f"imported in {elapsed:.2f} s: {args.rows / elapsed:,.0f} rows/s")
            print(
                f"peak RSS: importer {self_kb / 1024:.0f} MB (before import {rss_before / 1024:.0f}"
                f" MB), largest worker {child_kb / 1024:.0f} MB, upper bound for all"
                f" {(self_kb + workers * child_kb) / 1024:.0f} MB ({workers} workers);"
                f" peak PSS of importer + workers {peak_pss:.0f} MB"
            )
            print(
                f"rows {summary.rows_total:,}: accepted {summary.accepted:,}, on DNC"
                f" {summary.on_dnc:,}, duplicates {summary.duplicates:,}, rejected"
                f" {summary.rejected:,}, blank lines {summary.blank_lines:,}"
            )
        finally:
            engine.dispose()
            _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    sys.exit(main())
