"""`dialer listen`: follow the PBXs' AMI events and record every call's facts and outcome.

A `Listener` follows one PBX (its own AMI connection, reconnects, reconciliation, writers);
`run_listeners` runs one per PBX in the same event loop, and stops them all, each flushing
what it holds, when one fails for good (a refused login or certificate). Every log line names
the PBX.

One asyncio task reads events in arrival order (the AMI adapter queues them), keeps only the
ones the dialer uses, correlates and extracts them (`dialer.ami.events`) and buffers them. Another
writes the buffer to Postgres every `flush_interval` seconds or `max_batch` events, each batch in
one transaction (`CallStore.apply_async`). A batch's Python work runs on the event loop and its
database calls on a worker thread: while Postgres works, the socket keeps being read, and the
two never wait on each other for the interpreter lock. There are `writers` of them, each with
its own connection and its share of the calls (by custom_call_id), writing one batch at a time:
a call's events are applied in order, and one writer's batch is prepared while another's is in
the database. A batch that cannot be written is kept and tried again.

Memory is bounded by construction: the writers hold at most `max_buffered` events together
(with a batch being written); at that bound the listener stops taking events from its AMI
client until a write makes room, and the client, holding at most `max_queued_events`, stops
reading the socket (TCP holds the rest; a PBX whose writes then time out drops the session,
and the reconnect reconciles). Nothing is dropped on the way: `stats.paused` counts the pauses.
What it remembers of calls follows the calls in progress, not the calls made: the correlator's
aliases and each writer's call cache keep open calls, plus the `closed_calls_kept` (20,000)
closed last, for their late events; a call closed longer ago is looked up again if an event of it ever comes.

A failed OriginateResponse does not close its call at once: when a channel was created its
Hangup follows and carries the better cause (a PJSIP 486 Busy gives Reason 0 but cause 17), so
the listener waits `originate_settle` seconds for it first.

Who ended a call is not in the PBX's events (DESIGN.md): a PBX going down (`core restart now`)
hangs every call up with cause 0 first, and only then says `Shutdown` (to users with `system`
in `read`) and closes the connection. So the close of a call whose Hangup has cause 0 waits
`pbx_settle` seconds (its facts and events are written at once); when the PBX says it shuts
down, or the connection is lost, every close still held gets the fact `pbx_down_at` (and a
`DialerPbxDown` row in its timeline) and is written at once: those calls are `interrupted`,
ended by the PBX, not by their callees.

Calls of campaigns that record (`record_calls`) are recorded from their answer: once the
OriginateResponse is written, the listener starts MixMonitor on the answered channel (file
`<call id>.wav`) and adds the result to the call's timeline (`ControlRecording`) and its
`recording_file`. The Originate payload carries no recording variable, so the dialplan is not
asked to do it.

The listener is also how every host knows whether its PBX can take calls
(`dialer.campaigns.pbxs`): it registers the PBX's row when it starts, reports it `up` when its
AMI connection is made, `down` when it is lost, `shutting_down` on the `Shutdown` event, and
beats every `heartbeat_interval` seconds (connected or not; a connected beat also ends a
worker's report that the PBX could not take calls, once it has held its time). Its reports
are written in order, off the event loop; when it stops it leaves the PBX `unknown`.

After every (re)connect the listener asks for its events only (Filter actions; manager.conf
`eventfilter` lines do the same without the `system` privilege the action needs) and
reconciles open attempts with the PBX (`dialer.outcomes.reconcile`); it does so again periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine

from dialer import logs, metrics
from dialer.ami.client import CONNECTED_EVENT, DISCONNECTED_EVENT, AmiClient, AmiError
from dialer.ami.events import (
    EVENT_FILTERS,
    USED_EVENTS,
    Correlator,
    Event,
    EventFacts,
    event_time,
    extract,
)
from dialer.campaigns import pbxs
from dialer.outcomes import queue_board, queue_store, reconcile, timeline
from dialer.outcomes.callstore import BatchResult, CallStore, HeldClose, Observation
from dialer.outcomes.facts import Closed, CloseReason
from dialer.settings import AmiServer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    flush_interval: float = 0.05  # seconds between batch writes
    max_batch: int = 5000  # events that trigger a write before the interval is up
    writers: int = 2  # database connections writing batches, each for its share of the calls
    originate_settle: float = 1.0  # wait for the Hangup after a failed OriginateResponse
    # Hold the close of a call hung up with cause 0 this long: is the PBX going down?
    pbx_settle: float = 2.0
    reconcile_interval: float = 30.0
    reconcile: reconcile.ReconcileOptions = field(default_factory=reconcile.ReconcileOptions)
    # After the channel snapshot, let events already on their way arrive before judging.
    snapshot_settle: float = 1.0
    filter_events: bool = True
    # Events buffered for writing, all writers together (a few hundred bytes each): at this
    # bound the listener stops taking events until a write makes room (see the module doc).
    max_buffered: int = 100_000
    # Events the AMI client holds for the listener; at this bound it stops reading the socket.
    max_queued_events: int = 10_000
    retry_delay_max: float = 10.0
    # Closed calls whose aliases and cache entries are kept for their late events (per writer
    # for the cache); open calls are always kept.
    closed_calls_kept: int = 20_000
    # The listener's beat in the PBX's row: how every host knows it is alive (connected or not).
    heartbeat_interval: float = pbxs.HEARTBEAT_INTERVAL_S
    # The queues' members are written this often (what queue pacing reads); their agent time
    # (for reports) every `queue_minutes_interval`, and when the listener stops.
    queue_interval: float = 0.25
    queue_minutes_interval: float = 5.0


@dataclass
class ListenerStats:
    events: int = 0  # every event received
    used: int = 0  # correlated events that gave facts
    stored: int = 0  # of those, written for a known call
    unknown: int = 0  # events of calls that are not in the database
    uncorrelated: int = 0  # used kinds of events without a call id
    batches: int = 0
    closed: int = 0
    dnc_added: int = 0
    reconciled: int = 0  # attempts closed by reconciliation
    write_errors: int = 0
    paused: int = 0  # times taking events was paused: the writers held max_buffered
    recordings: int = 0  # MixMonitor started for recording campaigns
    # The latest events' time from arrival to written, for percentiles: about 3 MB at most.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        p99 = self.percentile(0.99)
        return {
            "events": self.events,
            "used": self.used,
            "stored": self.stored,
            "unknown": self.unknown,
            "uncorrelated": self.uncorrelated,
            "batches": self.batches,
            "closed": self.closed,
            "reconciled": self.reconciled,
            "dnc_added": self.dnc_added,
            "write_errors": self.write_errors,
            "paused": self.paused,
            "recordings": self.recordings,
            "p99_latency_ms": None if p99 is None else round(p99 * 1000, 1),
        }


def tune_collector() -> None:
    """Garbage-collector settings for a listener process (`dialer listen` calls this).

    A batch waiting to be written is tens of thousands of young objects, none in a reference
    cycle, and the default thresholds make the collector walk them again and again: about a
    tenth of the listener's CPU at full load. Collections stay (asyncio's tracebacks do make
    cycles), less often; what was loaded at start-up is exempted for good.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def observe(event: Event, call_id: str, wall: float) -> Observation | None:
    """The buffered form of a used event of call `call_id` received at `wall` (epoch seconds);
    None if it says nothing about the call."""
    at = event_time(event, dt.datetime.fromtimestamp(wall, dt.UTC))
    facts = extract(event, call_id, at)
    if facts is None:
        return None
    # Latency counts from when the PBX stamped the event (manager.conf timestampevents).
    origin = min(at.timestamp(), wall) if "Timestamp" in event else wall
    return Observation.of(call_id, event, facts, at, origin)


PBX_DOWN_EVENT = "DialerPbxDown"
SHUTDOWN_EVENT = "Shutdown"


@dataclass(slots=True)
class _Held:
    """A close held back: due at loop time `due`."""

    due: float
    reason: CloseReason = CloseReason.ORIGINATE_FAILED
    ended_at: dt.datetime | None = None


@dataclass(eq=False)
class _Writer:
    """One writer: its share of the calls' buffered events, its store (connection, cache) and
    the closes it holds back (failed Originates waiting for a Hangup, cause-0 Hangups)."""

    store: CallStore
    buffer: list[Observation] = field(default_factory=list)
    settling: dict[str, _Held] = field(default_factory=dict)  # call id -> its held close
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0


class ListenerFailed(Exception):
    """The listener of PBX `pbx` stopped with an error (its `__cause__`, e.g. the PBX refused
    the login or the TLS certificate); the others were stopped too."""

    def __init__(self, pbx: str, error: BaseException) -> None:
        super().__init__(f"listener {pbx}: {error}")
        self.pbx = pbx
        self.error = error


async def run_listeners(listeners: list[Listener], stop: asyncio.Event | None = None) -> None:
    """Run every listener in this loop until `stop` is set. When one stops with an error the
    others are stopped as well (each flushes what it holds), then `ListenerFailed` is raised:
    a process that silently stopped following one of its PBXs would leave that PBX's calls
    open."""
    stop = stop or asyncio.Event()
    tasks = {
        asyncio.create_task(listener.run(stop), name=f"listener-{listener.pbx}"): listener
        for listener in listeners
    }
    failure: ListenerFailed | None = None
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None and failure is None:
                    pbx = tasks[task].pbx
                    log.error("listener %s stopped: %s; stopping the others", pbx, error)
                    failure = ListenerFailed(pbx, error)
                    failure.__cause__ = error
                    stop.set()
    finally:
        for task in pending:  # cancelled from outside: each flushes as it ends
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    if failure is not None:
        raise failure


class Listener:
    def __init__(
        self,
        engine: Engine,
        server: AmiServer,
        *,
        options: ListenerOptions | None = None,
        client_factory: Callable[[AmiServer], AmiClient] | None = None,
    ) -> None:
        self.engine = engine
        self.server = server
        self.pbx = server.name
        self.options = options or ListenerOptions()
        self.stats = ListenerStats()
        self.correlator = Correlator(max_closed=self.options.closed_calls_kept)
        self._counted: dict[str, int] = {}  # stats already added to the metrics
        self._client_factory = client_factory or (
            lambda s: AmiClient(s, events=True, max_queued_events=self.options.max_queued_events)
        )
        self._writers = [
            _Writer(CallStore(engine, ended_cache_size=self.options.closed_calls_kept))
            for _ in range(max(1, self.options.writers))
        ]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconciling = asyncio.Lock()
        self._client: AmiClient | None = None
        # PBX states to report, in order (None: stop reporting).
        self._states: asyncio.Queue[tuple[str, str] | None] | None = None
        self._room = asyncio.Event()  # set by each write that went through
        # The PBX's queue members, for queue-paced campaigns (written by `_queue_loop`).
        self.board = queue_board.QueueBoard(self.pbx)
        self._queue_write_failed = False
        self._minutes_due_at = 0.0
        self._queue_gauges: set[tuple[str, str]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Listen until `stop` is set (or the task is cancelled); flush what is buffered."""
        client = self._client_factory(self.server)
        self._client = client
        self._states = asyncio.Queue()
        reporter = asyncio.create_task(self._report_loop(client), name="listener-pbx-state")
        stop = stop or asyncio.Event()
        try:
            connected = await self._connect(client, stop)
        except BaseException:
            await self._stop_reporting(reporter)
            raise
        if not connected:
            await self._stop_reporting(reporter)
            return
        background = [
            *(
                asyncio.create_task(self._write_loop(writer), name=f"listener-writer-{n}")
                for n, writer in enumerate(self._writers)
            ),
            asyncio.create_task(self._reconcile_loop(client), name="listener-reconcile"),
            asyncio.create_task(self._queue_loop(), name="listener-queues"),
            asyncio.create_task(self._close_on(stop, client), name="listener-stop"),
        ]
        try:
            async for event in client.events():
                self.handle(event, client)
                if self.buffered >= self.options.max_buffered:
                    await self._wait_for_room()
        finally:
            for task in [*background, *self._tasks]:
                task.cancel()
            await asyncio.gather(*background, *self._tasks, return_exceptions=True)
            await client.close()
            await self.flush(final=True)
            await self.write_queues(final=True)
            await self._stop_reporting(reporter)
            log.info("listener %s stopped: %s", self.pbx, self.stats.summary())

    async def _connect(self, client: AmiClient, stop: asyncio.Event) -> bool:
        """Connect (retrying while the PBX cannot be reached); False if `stop` came first: a
        process stopping, or stopped because another PBX's listener failed, does not wait for
        this PBX to come back."""
        connecting = asyncio.ensure_future(client.connect(retry=True))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
        if connecting.cancelled():
            await client.close()
            log.info("listener %s stopped before it could connect", self.pbx)
            return False
        connecting.result()  # a refused login (or certificate) raises here
        return True

    async def _close_on(self, stop: asyncio.Event, client: AmiClient) -> None:
        await stop.wait()
        await client.close()

    # -- events ---------------------------------------------------------------------------------

    def handle(self, event: Event, client: AmiClient | None = None) -> None:
        """Take one event from the AMI stream (cheap: no I/O)."""
        stats = self.stats
        stats.events += 1
        name = event.get("Event")
        if name in queue_board.MEMBER_EVENTS:
            self.board.apply(event, time.time())
            return
        if name in queue_board.AGENT_EVENTS:
            self.board.apply(event, time.time())  # and on to the call's facts
        if name not in USED_EVENTS:
            if name == CONNECTED_EVENT:
                self._report("up", "listener connected")
                if client is not None:
                    self._spawn(self._on_connected(client))
            elif name == DISCONNECTED_EVENT:
                log.warning("AMI %s: connection lost; events may be missed", self.pbx)
                metrics.AMI_CONNECTED.labels(self.pbx).set(0)
                self._report("down", f"listener lost its AMI connection: {event.get('Reason')}")
                self._pbx_down("connection lost")
            elif name == SHUTDOWN_EVENT:
                restart = event.get("Restart", "")
                log.warning("AMI %s: the PBX is shutting down (restart: %s)", self.pbx, restart)
                self._report("shutting_down", f"Shutdown event (restart: {restart or '?'})")
                self._pbx_down("shutdown")
            return
        call_id = self.correlator.key(event)
        if call_id is None:
            stats.uncorrelated += 1
            return
        observation = observe(event, call_id, time.time())
        if observation is None:
            return
        stats.used += 1
        writer = self._writer_of(call_id)
        writer.buffer.append(observation)
        facts = observation.facts
        if facts.final:
            if facts.values.get("hangup_cause") == 0 and self.options.pbx_settle > 0:
                # Written now, closed later: the PBX may be going down (see the module doc).
                observation.facts = replace(facts, final=False)
                due = asyncio.get_running_loop().time() + self.options.pbx_settle
                writer.settling[call_id] = _Held(due, CloseReason.HANGUP, observation.at)
            else:
                writer.settling.pop(call_id, None)
        elif facts.originate_failed and call_id not in writer.settling:
            loop = asyncio.get_running_loop()
            writer.settling[call_id] = _Held(loop.time() + self.options.originate_settle)
        if len(writer.buffer) >= self.options.max_batch:
            writer.wake.set()

    @property
    def buffered(self) -> int:
        """Events held for writing, all writers together."""
        return sum(len(w.buffer) for w in self._writers)

    async def _wait_for_room(self) -> None:
        """Take no more events until the writers hold fewer than `max_buffered`."""
        self.stats.paused += 1
        log.warning(
            "listener %s: %d events wait for the database; reading paused until it takes them",
            self.pbx, self.buffered,
        )  # fmt: skip
        while self.buffered >= self.options.max_buffered:
            self._room.clear()
            for writer in self._writers:
                writer.wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.options.flush_interval)
        log.info("listener %s: reading again", self.pbx)

    def _pbx_down(self, why: str) -> None:
        """The PBX shut down or was lost: the closes held now are the PBX's doing."""
        wall = time.time()
        at = dt.datetime.fromtimestamp(wall, dt.UTC)
        now = asyncio.get_running_loop().time()
        for writer in self._writers:
            if not writer.settling:
                continue
            for call_id, held in writer.settling.items():
                event = {"Event": PBX_DOWN_EVENT, "Reason": why}
                facts = EventFacts({"pbx_down_at": at})
                writer.buffer.append(Observation.of(call_id, event, facts, at, wall))
                held.due = now
            writer.wake.set()

    # -- the PBX's state for every host (dialer.campaigns.pbxs) ------------------------------------

    def _report(self, state: str, reason: str) -> None:
        if self._states is not None:
            self._states.put_nowait((state, reason))

    async def _register(self) -> None:
        try:
            await asyncio.to_thread(self._write_state, pbxs.REGISTER_SQL, {"name": self.pbx})
        except Exception:
            log.exception("listener %s: could not register the PBX", self.pbx)

    async def _report_loop(self, client: AmiClient) -> None:
        """Register the PBX, then write the reported states in order, and a beat whenever none
        came for a while. Off the event loop, and not in the way of the AMI connection."""
        assert self._states is not None
        await self._register()
        while True:
            try:
                item = await asyncio.wait_for(self._states.get(), self.options.heartbeat_interval)
            except TimeoutError:
                connected = bool(getattr(client, "connected", False))
                sql, params = pbxs.HEARTBEAT_SQL, pbxs.beat_params(self.pbx, connected)
            else:
                if item is None:
                    return
                state, reason = item
                sql = pbxs.RECORD_STATE_SQL
                # The report that it stopped is not a sign of life.
                alive = state != pbxs.UNKNOWN
                params = pbxs.state_params(self.pbx, state, reason, listener=alive)
            try:
                await asyncio.to_thread(self._write_state, sql, params)
            except Exception as exc:  # the database is away: the next beat says it again
                log.warning("listener %s: PBX state not written: %s", self.pbx, exc)

    async def _stop_reporting(self, reporter: asyncio.Task[None]) -> None:
        """Write what is queued, then leave the PBX `unknown`: nobody follows it now."""
        self._report("unknown", "its listener stopped")
        if self._states is not None:
            self._states.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(reporter), 5.0)
        except (TimeoutError, asyncio.CancelledError):
            reporter.cancel()
        except Exception:
            log.exception("listener %s: PBX state reporting failed", self.pbx)

    def _write_state(self, sql: str, params: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, params)

    def _writer_of(self, call_id: str) -> _Writer:
        writers = self._writers
        return writers[hash(call_id) % len(writers)]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing --------------------------------------------------------------------------------

    async def _write_loop(self, writer: _Writer) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.wake.wait(), self.options.flush_interval)
            writer.wake.clear()
            await self._flush(writer)
            if writer.failures:
                await asyncio.sleep(min(self.options.retry_delay_max, 0.5 * 2**writer.failures))

    async def flush(self, *, final: bool = False) -> None:
        """Write what is buffered (and the closes that are due), every writer at once."""
        await asyncio.gather(*(self._flush(w, final=final) for w in self._writers))

    async def _flush(self, writer: _Writer, *, final: bool = False) -> None:
        async with writer.lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            due = [
                HeldClose(c, h.reason, h.ended_at)
                for c, h in writer.settling.items()
                if final or h.due <= now
            ]
            batch, writer.buffer = writer.buffer, []
            if not batch and not due:
                return
            for close in due:
                del writer.settling[close.call_id]
            write = asyncio.ensure_future(writer.store.apply_async(batch, due))
            try:
                result = await asyncio.shield(write)
            except asyncio.CancelledError:
                # Stopping. A transaction cut off half-way would lose its batch: let it end,
                # and keep the batch for the final flush if it failed.
                await asyncio.wait([write])
                if write.exception() is None:
                    self._account(batch, write.result())
                else:
                    self._requeue(writer, batch, due, now)
                raise
            except Exception as exc:
                writer.failures += 1
                self.stats.write_errors += 1
                self._requeue(writer, batch, due, now)
                self._log_write_error(writer, exc, len(batch))
                return
            if writer.failures:
                log.info("listener %s: batches written again after %d failed tries", self.pbx,
                         writer.failures)  # fmt: skip
            writer.failures = 0
            self._account(batch, result)
            self._room.set()
            for call_id, channel in result.record:
                self._spawn(self._start_recording(call_id, channel))

    async def _start_recording(self, call_id: str, channel: str) -> None:
        """MixMonitor on a just answered call of a recording campaign; the outcome goes to the
        call's timeline like the listener's events."""
        client = self._client
        if client is None:
            return
        file_name = timeline.recording_file(call_id)
        try:
            response = await client.action(timeline.mixmonitor_headers(channel, file_name))
        except AmiError as exc:
            response = {"Response": "Error", "Message": str(exc)}
        ok = response.get("Response") == "Success"
        if ok:
            self.stats.recordings += 1
        else:
            log.warning(
                "call %s: recording not started: %s", call_id, response.get("Message", "error")
            )
        event = timeline.timeline_event(
            timeline.RECORDING_EVENT,
            Channel=channel,
            File=file_name,
            State="started",
            Response=response.get("Response", ""),
            Message=response.get("Message"),
            By="campaign",
        )
        facts = EventFacts({"recording_file": file_name} if ok else {})
        wall = time.time()
        at = dt.datetime.fromtimestamp(wall, dt.UTC)
        self._writer_of(call_id).buffer.append(Observation.of(call_id, event, facts, at, wall))

    def _log_write_error(self, writer: _Writer, exc: Exception, events: int) -> None:
        """The database away, a deadlock or a timeout: one line at the first failed try (the
        batch is kept and tried again), the later tries at DEBUG. Anything else with its
        traceback, every time."""
        if not isinstance(exc, sqlalchemy.exc.OperationalError | psycopg.OperationalError):
            log.exception("listener %s: batch of %d events not written", self.pbx, events)
            return
        cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
        # The first line: the server's message without the statement and its values.
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        level = logging.WARNING if writer.failures == 1 else logging.DEBUG
        log.log(level, "listener %s: batch of %d events not written, kept to try again: %s",
                self.pbx, events, reason)  # fmt: skip

    def _requeue(
        self, writer: _Writer, batch: list[Observation], due: list[HeldClose], now: float
    ) -> None:
        writer.buffer[:0] = batch
        for close in due:
            writer.settling.setdefault(close.call_id, _Held(now, close.reason, close.ended_at))

    def _account(self, batch: list[Observation], result: BatchResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.stored += result.stored
        stats.unknown += result.unknown
        stats.dnc_added += result.dnc_added
        stats.closed += len(result.closed)
        done = time.time()
        stats.latencies.extend(done - o.origin for o in batch)
        to_row = metrics.EVENT_TO_ROW.labels(self.pbx)
        for o in batch:
            to_row.observe(done - o.origin)
        self._count_events()
        ended = metrics.ENDED
        for closed in result.closed:
            ended.labels(self.pbx, closed.outcome.value).inc()
            self.correlator.closed(closed.call_id)
            log.debug(
                "call %s: %s (%s)", closed.call_id, closed.outcome, closed.reason,
                extra=logs.call_fields(closed.call_id, pbx=self.pbx),
            )  # fmt: skip

    def _count_events(self) -> None:
        """The event counters' news since the last batch, into the metrics (counting each
        event as it comes would cost the hot path a lock per event)."""
        stats, counted = self.stats, self._counted
        now = {
            "received": stats.events, "stored": stats.stored, "unknown": stats.unknown,
            "uncorrelated": stats.uncorrelated,
        }  # fmt: skip
        for name, value in now.items():
            delta = value - counted.get(name, 0)
            if delta <= 0:
                continue
            if name == "received":
                metrics.EVENTS_RECEIVED.labels(self.pbx).inc(delta)
            else:
                metrics.EVENTS.labels(self.pbx, name).inc(delta)
            counted[name] = value

    def _set_queue_gauges(self, now: float) -> None:
        counts = self.board.counts(now)
        for queue, state in self._queue_gauges - set(counts):
            metrics.QUEUE_MEMBERS.labels(self.pbx, queue, state).set(0)
        for (queue, state), n in counts.items():
            metrics.QUEUE_MEMBERS.labels(self.pbx, queue, state).set(n)
        self._queue_gauges |= set(counts)

    # -- (re)connect and reconciliation ---------------------------------------------------------

    async def _on_connected(self, client: AmiClient) -> None:
        log.info("AMI %s: connected", self.pbx)
        metrics.AMI_CONNECTED.labels(self.pbx).set(1)
        metrics.AMI_RECONNECTS.labels(self.pbx).inc()
        if self.options.filter_events:
            await self._install_filters(client)
        await self._queue_snapshot(client)
        await self.reconcile(client, on_connect=True)

    # -- queues ---------------------------------------------------------------------------------

    async def _queue_snapshot(self, client: AmiClient) -> None:
        """Read every queue's members (QueueStatus): events missed while disconnected are
        replaced by what the PBX has now."""
        self.board.begin_snapshot()
        try:
            entries = await client.action_list({"Action": "QueueStatus"})
        except AmiError as exc:
            log.warning("AMI %s: queue members not read (QueueStatus): %s", self.pbx, exc)
            return
        self.board.apply_snapshot(entries, time.time())

    async def _queue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.queue_interval)
            await self.write_queues()

    async def write_queues(self, *, final: bool = False) -> None:
        """Write the board's changes; kept for the next try when the database is away. Agent
        time goes with them when it is due (`queue_minutes_interval`) or `final`: a queue whose
        members change nothing costs no write."""
        now = time.time()
        self._set_queue_gauges(now)
        minutes = final or now >= self._minutes_due_at
        changes = self.board.take_changes(now, minutes=minutes)
        if not changes:
            return
        try:
            await asyncio.to_thread(queue_store.write_changes, self.engine, self.pbx, changes)
        except Exception as exc:
            self.board.give_back(changes)
            if not self._queue_write_failed:
                log.warning("listener %s: queue members not written: %s", self.pbx, exc)
            self._queue_write_failed = True
        else:
            if self._queue_write_failed:
                log.info("listener %s: queue members written again", self.pbx)
            self._queue_write_failed = False
            if minutes:
                self._minutes_due_at = now + self.options.queue_minutes_interval

    async def _install_filters(self, client: AmiClient) -> None:
        # Sent back to back, not one per round trip: once the first include filter is in place
        # every other kind of event is dropped until its own filter arrives, and a busy call's
        # Hangup can come and go within a few milliseconds of its Originate.
        results = await asyncio.gather(
            *(
                client.action(
                    {
                        "Action": "Filter",
                        "Operation": "Add",
                        "MatchCriteria": criteria,
                        "Filter": pattern,
                    }
                )
                for criteria, pattern in EVENT_FILTERS
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, AmiError):
                log.warning("AMI %s: Filter not installed: %s", self.pbx, result)
                return
            if isinstance(result, BaseException):
                raise result
            if result.get("Response") != "Success":
                # Without the `system` privilege; manager.conf eventfilter lines do the job.
                log.info(
                    "AMI %s: Filter refused (%s); relying on manager.conf eventfilter",
                    self.pbx,
                    result.get("Message", "error"),
                )
                return

    async def _reconcile_loop(self, client: AmiClient) -> None:
        while True:
            await asyncio.sleep(self.options.reconcile_interval)
            try:
                await self.reconcile(client, on_connect=False)
            except Exception:
                # A database outage must not end the periodic checks for good: the calls it
                # would have closed are only closed here (or at the next reconnect).
                log.exception("AMI %s: reconciliation failed; trying again later", self.pbx)

    async def reconcile(self, client: AmiClient, *, on_connect: bool) -> int:
        """Close the open attempts the PBX no longer has; returns how many were closed."""
        async with self._reconciling:
            try:
                channels = await client.action_list({"Action": "CoreShowChannels"})
            except AmiError as exc:
                log.warning("AMI %s: reconciliation skipped: %s", self.pbx, exc)
                return 0
            snapshot = dt.datetime.now(dt.UTC)
            present = reconcile.present_call_ids(channels)
            await asyncio.sleep(self.options.snapshot_settle)
            await self.flush()
            async with contextlib.AsyncExitStack() as held:
                for writer in self._writers:  # no batch is written meanwhile
                    await held.enter_async_context(writer.lock)
                closed = await asyncio.to_thread(self._close_gone, present, snapshot, on_connect)
            for c in closed:
                metrics.ENDED.labels(self.pbx, c.outcome.value).inc()
            gone = [c.call_id for c in closed]
            for writer in self._writers:
                writer.store.forget(gone)
            for call_id in gone:
                self.correlator.closed(call_id)
            if closed:
                log.info(
                    "AMI %s: reconciliation closed %d attempts the PBX no longer has",
                    self.pbx,
                    len(closed),
                )
            self.stats.reconciled += len(closed)
            return len(closed)

    def _close_gone(
        self, present: set[str], snapshot: dt.datetime, on_connect: bool
    ) -> list[Closed]:
        with self.engine.begin() as conn:
            return reconcile.close_gone(
                conn,
                pbx=self.pbx,
                present=present,
                snapshot=snapshot,
                on_connect=on_connect,
                options=self.options.reconcile,
            )
