"""Event ingest: a recorded AMI event stream replayed into the listener, applied to Postgres.

1. Record: the PBX simulator plays one call of each behaviour (numbers ending 01-09 and 11)
   while a session with the listener's own event filters records every frame it receives:
   these are the frames a filtering Asterisk sends the listener, in the simulator's shapes.
2. Load a throwaway database with one open call attempt per replayed call.
3. Burst: a replay server in another process streams `--calls` calls (each a recorded call
   with its id replaced; `--window` calls interleaved at a time) as fast as the socket allows
   into an in-process `Listener`. Printed: relevant events/s applied to Postgres (events the
   listener used and committed, from the first byte sent to the last commit).
4. Paced: `--rate` new calls per second for `--paced-seconds`, each call's events at their
   recorded offsets scaled to real time. Each frame gets a `Timestamp:` header when sent (as
   manager.conf `timestampevents` adds); printed: p50/p99/max event-to-row latency, from that
   stamp to the commit that stored the event.

The machine is shared and has 2 cores: the replay server, the listener and Postgres run on
the same cores, and other people's work with them, so figures vary from run to run.

Example:
    .venv/bin/python bench/event_ingest.py
    .venv/bin/python bench/event_ingest.py --calls 60000 --rate 100 --paced-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import heapq
import json
import multiprocessing as mp
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, text
from stack import throwaway_database
from stopping import exit_on_sigterm  # noqa: E402

from dialer.ami.client import AmiClient
from dialer.ami.events import EVENT_FILTERS, Correlator, extract, parse_frame
from dialer.db import make_engine
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.models import Campaign, Trunk
from dialer.outcomes.listener import Listener, ListenerOptions, tune_collector
from dialer.outcomes.reconcile import ReconcileOptions
from dialer.pbxsim import start_in_thread
from dialer.settings import AmiServer

BEHAVIOURS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "11")
TEMPLATE_EPOCH = "1000000000000"
RECORD_SPEED = 50.0
USER, SECRET = "dialer", "bench-secret"


@dataclass(frozen=True)
class Template:
    """One recorded call: its frames split around its call id, with offsets at real speed."""

    frames: list[tuple[float, list[str]]]  # (seconds after the Originate, parts)
    used: int  # frames the listener uses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40_000, help="calls in the burst")
    parser.add_argument("--window", type=int, default=2000, help="calls interleaved at once")
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s in the paced run")
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--flush-ms", type=int, default=50)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    templates = record_templates()
    tune_collector()  # as `dialer listen` does
    used_per_round = sum(t.used for t in templates)
    frames_per_round = sum(len(t.frames) for t in templates)
    print(
        f"recorded {len(templates)} calls: {frames_per_round} frames, {used_per_round} used "
        f"({used_per_round / len(templates):.1f} used events per call)"
    )
    paced_calls = int(args.rate * args.paced_seconds)
    run = uuid.uuid4().hex[:8]
    with throwaway_database(f"dialer_bench_ingest_{run}") as database_url:
        engine = make_engine(database_url)
        call_ids = load_attempts(engine, args.calls + paced_calls)
        burst_ids, paced_ids = call_ids[: args.calls], call_ids[args.calls :]

        burst = replay(engine, templates, burst_ids, args, paced=False)
        applied = burst["stored"] / burst["elapsed"]
        print(
            f"burst: {burst['stored']} relevant events of {len(burst_ids)} calls applied in "
            f"{burst['elapsed']:.2f}s: {applied:,.0f} events/s "
            f"({burst['batches']} batches, {burst['closed']} calls closed)"
        )
        paced = replay(engine, templates, paced_ids, args, paced=True)
        print(
            f"paced: {args.rate:g} calls/s for {args.paced_seconds:g}s, {paced['stored']} "
            f"relevant events: latency p50 {paced['p50'] * 1000:.1f} ms, "
            f"p99 {paced['p99'] * 1000:.1f} ms, max {paced['max'] * 1000:.1f} ms"
        )
        check(engine, len(call_ids))
        print(
            json.dumps(
                {
                    "events_per_s": round(applied),
                    "p99_ms": round(paced["p99"] * 1000, 1),
                    "target_events_per_s": 20_000,
                    "target_p99_ms": 250,
                }
            )
        )
        engine.dispose()


# -- 1. record ------------------------------------------------------------------------------------


def record_templates() -> list[Template]:
    sim = start_in_thread(port=0, speed=RECORD_SPEED, secret=SECRET)
    try:
        ids = {b: f"{TEMPLATE_EPOCH}_{900000 + n}" for n, b in enumerate(BEHAVIOURS)}
        with socket.create_connection((sim.host, sim.port), timeout=5) as sock:
            frames = [
                "Action: Login\r\nActionID: login\r\nUsername: dialer\r\n"
                f"Secret: {SECRET}\r\nEvents: on\r\n\r\n",
                *(
                    f"Action: Filter\r\nActionID: f{n}\r\nOperation: Add\r\n"
                    f"MatchCriteria: {criteria}\r\nFilter: {pattern}\r\n\r\n"
                    for n, (criteria, pattern) in enumerate(EVENT_FILTERS)
                ),
            ]
            sock.sendall("".join(frames).encode())
            started = time.monotonic()
            asyncio.run(_originate_templates(sim.host, sim.port, ids))
            received = _read_frames(sock, seconds=2.0)
    finally:
        sim.stop()
    templates = []
    for behaviour, call_id in ids.items():
        frames: list[tuple[float, list[str]]] = []
        used = 0
        correlator = Correlator()
        for at, frame in received:
            if call_id not in frame or not frame.startswith("Event: "):
                continue
            offset = max(0.0, (at - started) * RECORD_SPEED)
            frames.append((offset, frame.split(call_id)))
            event = parse_frame(frame)
            key = correlator.key(event)
            if key == call_id and extract(event, key, dt.datetime.now(dt.UTC)) is not None:
                used += 1
        if not frames:
            raise SystemExit(f"nothing recorded for behaviour {behaviour}")
        first = frames[0][0]
        templates.append(Template([(t - first, parts) for t, parts in frames], used))
    return templates


async def _originate_templates(host: str, port: int, ids: dict[str, str]) -> None:
    async with AmiClient(AmiServer("sim", host, port, USER, SECRET), events=False) as client:
        for behaviour, call_id in ids.items():
            await client.originate(
                build_originate_payload(
                    call_id=call_id,
                    to_number=f"+1555000{behaviour}{behaviour}",
                    from_number="+15559990000",
                    settings=CallSettings(
                        ivr_file="welcome_message",
                        ivr_vm_file="vm_message",
                        transfer_number="+15551234567",
                    ),
                    trunk=TrunkRoute(),
                )
            )


def _read_frames(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """Every frame received for `seconds`, with the time its bytes arrived."""
    frames: list[tuple[float, str]] = []
    sock.settimeout(0.1)
    deadline = time.monotonic() + seconds
    buffer = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        at = time.monotonic()
        buffer += data
        *complete, buffer = buffer.split(b"\r\n\r\n")
        frames.extend((at, f.decode() + "\r\n") for f in complete if f)
    return frames


# -- 2. load --------------------------------------------------------------------------------------


def load_attempts(engine: Engine, count: int) -> list[str]:
    """`count` dialing contacts, each with an open attempt; returns their custom_call_ids."""
    with engine.begin() as conn:
        trunk = conn.execute(
            insert(Trunk).values(name="MC", cps=1000, max_channels=100_000).returning(Trunk.id)
        ).scalar_one()
        campaign = conn.execute(
            insert(Campaign)
            .values(
                name="ingest",
                trunk_id=trunk,
                status="running",
                caller_id_number="+15559990000",
                ivr_file="welcome_message",
                opt_out_key="9",
            )
            .returning(Campaign.id)
        ).scalar_one()
        conn.execute(
            text(
                """
                INSERT INTO contacts (campaign_id, phone_e164, phone_raw, status, attempts)
                SELECT :c, p, p, 'dialing', 1
                  FROM (SELECT '+1555' || lpad(n::text, 7, '0') AS p
                          FROM generate_series(1, :n) AS n) AS numbers
                """
            ),
            {"c": campaign, "n": count},
        )
        # Not yet sent: reconciliation leaves them alone for the Originate timeout + grace.
        rows = conn.execute(
            text(
                """
                INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,
                                           attempt_number, status)
                SELECT '1700000000000_' || k.id, :c, k.id, :t, 1, 'originating'
                  FROM contacts k ORDER BY k.id
                RETURNING custom_call_id
                """
            ),
            {"c": campaign, "t": trunk},
        )
        return [r.custom_call_id for r in rows]


# -- 3/4. replay ----------------------------------------------------------------------------------


def replay(
    engine: Engine, templates: list[Template], call_ids: list[str], args: Any, *, paced: bool
) -> dict[str, Any]:
    ready = mp.Event()
    go = mp.Event()
    port_queue: mp.Queue[int] = mp.Queue()
    server = mp.Process(
        target=_serve,
        args=(templates, call_ids, paced, args.rate, args.window, port_queue, ready, go),
        daemon=True,
    )
    server.start()
    try:
        port = port_queue.get(timeout=30)
        expected = sum(templates[n % len(templates)].used for n in range(len(call_ids)))
        return asyncio.run(_listen(engine, port, expected, ready, go, args))
    finally:
        server.terminate()
        server.join(5)


async def _listen(
    engine: Engine, port: int, expected: int, ready: Any, go: Any, args: Any
) -> dict[str, Any]:
    options = ListenerOptions(
        flush_interval=args.flush_ms / 1000,
        max_batch=args.batch,
        reconcile_interval=3600.0,
        reconcile=ReconcileOptions(grace_s=3600.0, min_age_s=3600.0),
    )
    listener = Listener(
        engine, AmiServer("replay", "127.0.0.1", port, USER, SECRET), options=options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await asyncio.to_thread(ready.wait, 30)
    await asyncio.sleep(0.5)  # filters installed, first reconciliation done
    started = time.time()
    go.set()
    deadline = time.monotonic() + args.timeout
    while listener.stats.stored < expected:
        if time.monotonic() > deadline or task.done():
            raise SystemExit(f"stored {listener.stats.stored} of {expected} events before timeout")
        await asyncio.sleep(0.01)
    elapsed = time.time() - started
    stop.set()
    await asyncio.wait_for(task, 30)
    stats = listener.stats
    ordered = sorted(stats.latencies)
    return {
        "stored": stats.stored,
        "elapsed": elapsed,
        "batches": stats.batches,
        "closed": stats.closed,
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }


def _serve(
    templates: list[Template],
    call_ids: list[str],
    paced: bool,
    rate: float,
    window: int,
    port_queue: Any,
    ready: Any,
    go: Any,
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        streaming: asyncio.Task[None] | None = None
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            action = parse_frame(raw.decode())
            action_id = action.get("ActionID", "")
            name = action.get("Action", "").lower()
            if name == "coreshowchannels":
                writer.write(
                    f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                    "Message: Channels will follow\r\n\r\nEvent: CoreShowChannelsComplete\r\n"
                    f"ActionID: {action_id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                )
                continue
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\n\r\n".encode())
            if name == "login" and streaming is None:
                ready.set()
                streaming = asyncio.create_task(stream(writer))

    async def stream(writer: asyncio.StreamWriter) -> None:
        await asyncio.to_thread(go.wait, 60)
        if paced:
            await _paced(writer, templates, call_ids, rate)
        else:
            await _burst(writer, templates, call_ids, window)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _stamp(parts: list[str], call_id: str, now: float) -> str:
    frame = call_id.join(parts)
    head, sep, rest = frame.partition("\r\n")
    return f"{head}{sep}Timestamp: {now:.6f}\r\n{rest}\r\n"


async def _burst(
    writer: asyncio.StreamWriter, templates: list[Template], call_ids: list[str], window: int
) -> None:
    """Interleave `window` calls at a time, each call's frames in order, as fast as possible."""
    pending = iter(enumerate(call_ids))
    active: list[tuple[str, list[tuple[float, list[str]]], int]] = []
    chunk: list[str] = []
    size = 0
    while True:
        while len(active) < window:
            nxt = next(pending, None)
            if nxt is None:
                break
            n, call_id = nxt
            active.append((call_id, templates[n % len(templates)].frames, 0))
        if not active:
            break
        now = time.time()
        still = []
        for call_id, frames, index in active:
            text_ = _stamp(frames[index][1], call_id, now)
            chunk.append(text_)
            size += len(text_)
            if index + 1 < len(frames):
                still.append((call_id, frames, index + 1))
        active = still
        if size > 256 * 1024:
            writer.write("".join(chunk).encode())
            chunk, size = [], 0
            await writer.drain()
    if chunk:
        writer.write("".join(chunk).encode())
        await writer.drain()


async def _paced(
    writer: asyncio.StreamWriter, templates: list[Template], call_ids: list[str], rate: float
) -> None:
    """Call n starts at n / rate seconds; its frames follow at their recorded offsets."""
    start = time.monotonic() + 0.05
    heap: list[tuple[float, int, int]] = [(start + n / rate, n, 0) for n in range(len(call_ids))]
    heapq.heapify(heap)
    while heap:
        due = heap[0][0]
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now_mono = time.monotonic()
        now = time.time()
        out = []
        while heap and heap[0][0] <= now_mono:
            _, n, index = heapq.heappop(heap)
            frames = templates[n % len(templates)].frames
            out.append(_stamp(frames[index][1], call_ids[n], now))
            if index + 1 < len(frames):
                call_start = start + n / rate
                heapq.heappush(heap, (call_start + frames[index + 1][0], n, index + 1))
        writer.write("".join(out).encode())
        await writer.drain()


# -- checks ---------------------------------------------------------------------------------------


def check(engine: Engine, calls: int) -> None:
    """The replay must leave every attempt closed once, with the template's outcome."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT outcome, count(*) AS n FROM call_attempts GROUP BY outcome ORDER BY 1")
        ).all()
        closes = conn.execute(
            text("SELECT count(*) FROM call_events WHERE event = 'DialerOutcome'")
        ).scalar_one()
    summary = {r.outcome: r.n for r in rows}
    print(f"outcomes: {summary}")
    if closes != calls or None in summary:
        raise SystemExit(f"{closes} closes for {calls} calls; outcomes {summary}")


if __name__ == "__main__":
    exit_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        main()
