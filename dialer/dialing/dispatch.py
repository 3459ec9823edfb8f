"""The dispatch tick: turn due contacts into committed call attempts, then hand them to workers.

One tick, in one transaction:
1. take a transaction-level advisory lock; if another tick holds it, do nothing (overlapping
   ticks never claim the same contacts, and `FOR UPDATE SKIP LOCKED` backs that up);
2. campaign lifecycle (`campaigns.advance_schedules`): scheduled campaigns whose start has
   come run; running campaigns past their end are completed, not cancelled: the schedule ran
   its course, nobody stopped it. Contacts not reached stay pending (nothing is lost; reports
   show them as not reached);
3. per trunk, the PBXs it can be sent through now (`dialer.dialing.routing`: its routes to PBXs
   that are up, else to PBXs whose state is unknown; with none, nothing is claimed for it: its
   contacts wait, and the tick says why in its report and, every `UNROUTED_LOG_EVERY_S`, in
   the log), and the spare capacity: free channels, and no more than the trunk can start
   within the lookahead, and no more than those PBXs can take (their own free channels and
   rate, shared by every trunk they serve); per campaign on it, claim due contacts and sort
   them: on a do-not-call list
   (global or the campaign's) -> status dnc; outside their own calling window (the
   campaign's hours and the region calling rules and holidays of the number,
   `dialer.campaigns.calling_rules`) -> re-scheduled to when it opens (checked again after
   `calling_window.HORIZON` when zones too far apart share no opening that soon, or rules
   leave none; cancelled with outcome `no_calling_window` only when the campaign's own hours
   can never open: entirely outside the guard, or no time zone); held by a frequency rule
   (`dialer.campaigns.frequency`, the number's sends over all campaigns) -> re-scheduled to
   when the rule allows it (the last checks judge again, the number locked); callable -> status
   dialing, attempts + 1, and a call attempt row `queued` with its custom_call_id, the PBX it
   goes through (the one with the most free capacity), the caller ID (the campaign's, or one
   picked from its caller-ID pool, `dialer.campaigns.caller_ids`: a contact no number of the
   pool can take now waits `NO_CALLER_ID_RETRY_S`) and the Originate payload
   (`dialer.dialing.payload`, with that route's channel template), so the originate task only
   claims and sends. A campaign whose settings cannot make a payload is not dialled (and
   logged);
4. attempts left `queued` for long (the broker lost their message, or enqueueing failed after
   the commit) are handed out again; the originate task's conditional UPDATE makes any
   duplicate message harmless;
5. running campaigns with nothing left to dial are completed (`campaigns.complete_if_exhausted`).

After the commit, and only then, one originate task per attempt is enqueued.

Every `REST_CHECK_EVERY_S`, in its own transaction, caller IDs whose answer rate fell far
below their pool's are rested (`dialer.campaigns.caller_id_pools.rest_low_answer_rates`).

Around the tick, each in its own short transaction (`dialer.dialing.pbxcontrol`): before it,
back-pressure sets each PBX's rate from its recent OriginateResponse latency (about once a
second); after it, the calls still open on a PBX that has been down longer than
`TickOptions.pbx_down_close_after_s` are closed (`unknown`, ended by the PBX, retried per the
campaign's policy) unless it came back and reconciled them first.

`contacts.attempts` counts attempts used against `max_attempts`; `call_attempts.attempt_number`
numbers the rows of one contact, including attempts that were never sent (those do not use up
an attempt, so the two can differ).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session, sessionmaker

from dialer.ami import wire as amiwire
from dialer.campaigns import caller_id_pools, calling_window, frequency
from dialer.campaigns import rules as rules_store
from dialer.campaigns import service as campaigns_module
from dialer.campaigns.calling_rules import RuleBook
from dialer.campaigns.calling_window import CallingWindow
from dialer.campaigns.frequency import FrequencyRule
from dialer.dialing import agent_pacing, pbxcontrol, queue_pacing
from dialer.dialing.backpressure import Policy
from dialer.dialing.pacing import trunk_usage
from dialer.dialing.payload import (
    DEFAULT_CHANNEL_TEMPLATE,
    CallSettings,
    OriginateTemplate,
    TrunkRoute,
    custom_call_id,
)
from dialer.dialing.routing import Chooser, Route, pbx_loads, trunk_routes

log = logging.getLogger(__name__)

# Arbitrary constant naming the dispatch lock ("dialer" in ASCII).
DISPATCH_LOCK_KEY = 0x6469616C6572
NO_WINDOW_OUTCOME = "no_calling_window"
INVALID_NUMBER_OUTCOME = "invalid_number"
# A trunk whose calls wait for a PBX is logged at most this often.
UNROUTED_LOG_EVERY_S = 10.0
_unrouted_logged: dict[str, float] = {}
# A running campaign whose calls cannot be built is logged at most this often.
REFUSED_LOG_EVERY_S = 60.0
_refused_logged: dict[str, float] = {}
# A contact no caller ID of its campaign's pool can take now (all resting or at their daily
# cap) is due again after this; the campaign says so in the log at most this often.
NO_CALLER_ID_RETRY_S = 300.0
NO_CALLER_ID_LOG_EVERY_S = 60.0
_no_caller_id_logged: dict[str, float] = {}
# A queue-paced campaign held back by its agents says so at most this often.
QUEUE_HELD_LOG_EVERY_S = 60.0
_queue_held_logged: dict[str, float] = {}
# How often the caller IDs' answer rates are judged.
REST_CHECK_EVERY_S = 60.0
_rest_checked = -math.inf


@dataclass(frozen=True, slots=True)
class TickOptions:
    # Queue no more than this many seconds of calls per trunk ahead of the pacing.
    lookahead_s: float = 2.0
    # Upper bound on attempts created by one tick (keeps a tick's transaction short).
    max_attempts_per_tick: int = 2000
    # Contacts examined per claim query.
    claim_batch: int = 500
    # Claim rounds per campaign, for when many claimed contacts turn out not callable now.
    max_claim_rounds: int = 20
    # An attempt still `queued` this long after it was handed to the broker is handed again.
    requeue_after_s: float = 60.0
    # Calls open on a PBX down (or shutting down) this long are closed: `unknown`, ended by
    # the PBX, retried per policy (unless its listener reconciled them when it came back).
    pbx_down_close_after_s: float = 120.0
    # Back-pressure's measuring (dialer.dialing.backpressure); None: no rate control.
    backpressure: Policy | None = field(default_factory=Policy)


@dataclass(slots=True)
class TickReport:
    skipped: bool = False  # another tick held the lock
    queued: list[int] = field(default_factory=list)  # new attempt ids
    requeued: list[int] = field(default_factory=list)  # stale queued attempt ids
    dnc: int = 0
    rescheduled: int = 0
    no_window: int = 0
    exhausted: int = 0
    # Campaign names, by what the tick did to them.
    campaigns_started: list[str] = field(default_factory=list)
    campaigns_ended: list[str] = field(default_factory=list)
    campaigns_completed: list[str] = field(default_factory=list)
    campaigns_refused: list[str] = field(default_factory=list)  # settings unusable
    invalid_numbers: int = 0
    no_caller_id: int = 0  # contacts waiting for a caller ID of their campaign's pool
    # Trunks with calls to make and no PBX that can take them now: why, by trunk name.
    unrouted: dict[str, str] = field(default_factory=dict)
    # Campaigns paced by their transfer queue: what the agents allowed, by campaign name.
    queue_paced: dict[str, agent_pacing.Decision] = field(default_factory=dict)

    @property
    def to_enqueue(self) -> list[int]:
        return self.queued + self.requeued


class TickSummary:
    """What the ticks did, for the log: a campaign started, ended or completed is said at once; the rest (calls queued, handed out again, do-not-call, rescheduled, without a
    window) is summed up in one line at most every `every_s` seconds, and only when there is
    something to say. A campaign dialling would otherwise log every second."""

    COUNTS = ("queued", "requeued", "dnc", "rescheduled", "no_window")

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._since = clock()
        self._counts = dict.fromkeys(self.COUNTS, 0)

    def add(self, report: TickReport) -> list[str]:
        """The lines to log for this tick (none, most of the time)."""
        lines = [
            f"campaign {name} {what}"
            for what, names in (
                ("started", report.campaigns_started),
                ("ended (its schedule ran out)", report.campaigns_ended),
                ("completed (nothing left to dial)", report.campaigns_completed),
            )
            for name in names
        ]
        for name in self.COUNTS:
            value = getattr(report, name)
            self._counts[name] += len(value) if isinstance(value, list) else value
        now = self._clock()
        if now - self._since >= self.every_s:
            if any(self._counts.values()):
                done = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self._counts.items())
                lines.append(f"ticks over the last {now - self._since:.0f} s: {done}")
            self._since = now
            self._counts = dict.fromkeys(self.COUNTS, 0)
        return lines


# This process's ticks, summed up for the log.
_TICK_LOG = TickSummary()


@dataclass(frozen=True, slots=True)
class _Campaign:
    id: int
    name: str
    trunk_id: int
    trunk_name: str
    max_attempts: int
    window: CallingWindow
    # One template per route (PBX) of the trunk; empty when the campaign's settings cannot
    # make a payload (see `problem`).
    templates: dict[str, OriginateTemplate]
    problem: str | None = None
    pool_id: int | None = None
    # Paced by its transfer queue's free agents (None: by the trunk alone), keeping abandoned
    # transfers under abandon_target.
    pace_queue: str | None = None
    abandon_target: float = 0.03

    @classmethod
    def from_row(cls, row: Any, routes: list[Route]) -> _Campaign:
        templates: dict[str, OriginateTemplate] = {}
        problem = None
        settings = CallSettings.from_campaign(row)
        try:
            # The campaign's own settings, then each route's dial string.
            for route in [Route("", DEFAULT_CHANNEL_TEMPLATE), *routes]:
                trunk = TrunkRoute(name=row.trunk_name, channel_template=route.channel_template)
                template = OriginateTemplate.build(
                    from_number=row.caller_id_number, settings=settings, trunk=trunk
                )
                # A frame with the campaign's values must be safe to send, whoever the callee is.
                amiwire.originate_frame(template.payload("0_0", template.caller))
                if route.pbx:
                    templates[route.pbx] = template
        except ValueError as exc:  # PayloadError, UnsafeHeaderValue
            templates, problem = {}, str(exc)
        window = CallingWindow(
            row.calling_hours_start, row.calling_hours_end, frozenset(row.calling_days)
        )
        return cls(
            row.id, row.name, row.trunk_id, row.trunk_name, row.max_attempts, window, templates,
            problem, row.caller_id_pool_id,
            row.transfer_queue if row.pace_by_queue and row.transfer_queue else None,
            row.abandon_target,
        )  # fmt: skip

    def payload(
        self, route: Route, call_id: str, phone_e164: str, caller: str | None = None
    ) -> dict[str, Any]:
        assert self.templates, "campaigns with a settings problem are not dialled"
        return self.templates[route.pbx].payload(call_id, phone_e164, caller)

    def caller(self, route: Route) -> str:
        """The campaign's own caller ID (E.164)."""
        return self.templates[route.pbx].caller


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    phone_e164: str  # the number its next attempt dials (its first, or an alternate)
    timezones: tuple[str, ...]  # stored for its first number; an alternate's come from it
    attempts: int
    on_dnc: bool  # that number is on a do-not-call list
    alternates: int  # how many other numbers it has


_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")

_RUNNING = text(
    """
    SELECT c.*, t.name AS trunk_name
      FROM campaigns c JOIN trunks t ON t.id = c.trunk_id
     WHERE c.status = 'running' AND t.enabled
       AND (c.start_at IS NULL OR c.start_at <= :now)
       AND (c.end_at IS NULL OR c.end_at > :now)
     ORDER BY c.id
    """
)

# The number the contact's next attempt dials: its first, or the alternate it moved to.
_DIALLED = "(CASE WHEN c.phone_index = 0 THEN c.phone_e164 ELSE c.alt_phones[c.phone_index] END)"

_CLAIM = text(
    f"""
    SELECT c.id, {_DIALLED} AS phone_e164,
           CASE WHEN c.phone_index = 0 THEN c.timezones END AS timezones, c.attempts,
           EXISTS (SELECT 1 FROM dnc_numbers d
                    WHERE d.phone_e164 = {_DIALLED}
                      AND (d.campaign_id IS NULL OR d.campaign_id = c.campaign_id)) AS on_dnc,
           cardinality(c.alt_phones) AS alternates
      FROM contacts c
     WHERE c.campaign_id = :campaign_id AND c.status = 'pending'
       AND c.next_attempt_at <= :now
     ORDER BY c.next_attempt_at
     LIMIT :limit
       FOR UPDATE OF c SKIP LOCKED
    """
)

# A contact whose number to dial is listed moves on to its next number that is not (in turn,
# from the one listed); with every number listed it is `dnc`.
_NEXT_UNLISTED = text(
    """
    UPDATE contacts c
       SET phone_index = coalesce(nxt.idx, c.phone_index),
           status = CASE WHEN nxt.idx IS NULL THEN 'dnc' ELSE c.status END, updated_at = now()
      FROM (SELECT k.id,
                   (SELECT (k.phone_index + s) % n FROM generate_series(1, n - 1) AS s
                     WHERE NOT EXISTS (
                           SELECT 1 FROM dnc_numbers d
                            WHERE d.phone_e164 = (ARRAY[k.phone_e164] || k.alt_phones)
                                                   [(k.phone_index + s) % n + 1]
                              AND (d.campaign_id IS NULL OR d.campaign_id = k.campaign_id))
                     ORDER BY s LIMIT 1) AS idx
              FROM contacts k, LATERAL (SELECT cardinality(k.alt_phones) + 1 AS n) AS count
             WHERE k.id = ANY(CAST(:ids AS bigint[]))) AS nxt
     WHERE c.id = nxt.id AND c.status = 'pending'
    RETURNING c.status
    """
)

_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('call_attempts', 'id')) FROM generate_series(1, :count)"
)

# Attempt ids were drawn from the identity sequence first, so each row is written complete,
# custom_call_id and payload included, in one INSERT. The rows travel as one JSON document:
# encoding it is one C call, where a text[] of payloads is escaped element by element.
_CREATE_ATTEMPTS = text(
    """
    WITH new AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS v(id bigint, custom_call_id text, contact_id bigint, pbx text, payload jsonb,
                    caller_id text, caller_id_id integer, phone_e164 text)
    ), dialing AS (
        UPDATE contacts c
           SET status = 'dialing', attempts = c.attempts + 1, updated_at = now()
          FROM new
         WHERE c.id = new.contact_id AND c.status = 'pending'
        RETURNING c.id
    )
    INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id, pbx,
                               attempt_number, status, payload, caller_id, caller_id_id,
                               phone_e164)
    SELECT new.id, new.custom_call_id, :campaign_id, new.contact_id, :trunk_id, new.pbx,
           coalesce((SELECT max(a.attempt_number) FROM call_attempts a
                      WHERE a.contact_id = new.contact_id), 0) + 1,
           'queued', new.payload, new.caller_id, new.caller_id_id, new.phone_e164
      FROM new JOIN dialing ON dialing.id = new.contact_id
     ORDER BY new.id
    RETURNING id, caller_id_id
    """
)

_MARK_STATUS = text(
    """
    UPDATE contacts SET status = :status, last_outcome = coalesce(:outcome, last_outcome),
                        updated_at = now()
     WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'pending'
    """
)

_RESCHEDULE = text(
    """
    UPDATE contacts c SET next_attempt_at = v.at, updated_at = now()
      FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[])) AS v(id, at)
     WHERE c.id = v.id AND c.status = 'pending'
    """
)

_REQUEUE_STALE = text(
    """
    UPDATE call_attempts SET queued_at = now()
     WHERE id IN (SELECT id FROM call_attempts
                   WHERE status = 'queued'
                     AND queued_at < now() - make_interval(secs => :after)
                   ORDER BY id LIMIT :limit)
    RETURNING id
    """
)


def run_tick(
    sessions: sessionmaker[Session],
    enqueue: Callable[[Sequence[int]], None],
    *,
    now: dt.datetime | None = None,
    options: TickOptions = TickOptions(),
) -> TickReport:
    """One dispatch tick: commit the claimed attempts, then enqueue them (see module doc)."""
    if options.backpressure is not None:
        pbxcontrol.run_guarded(pbxcontrol.control, sessions, options.backpressure)
    with sessions() as session, session.begin():
        report = plan_tick(session, now=now, options=options)
    if report.to_enqueue:
        # After the commit: a worker must never see an id whose row is not visible yet. If
        # enqueueing fails, the attempts stay `queued` and a later tick hands them out again.
        enqueue(report.to_enqueue)
    if not report.skipped:
        pbxcontrol.run_guarded(
            pbxcontrol.close_calls_on_dead_pbxs, sessions, options.pbx_down_close_after_s
        )
        global _rest_checked
        if time.monotonic() - _rest_checked >= REST_CHECK_EVERY_S:
            _rest_checked = time.monotonic()
            pbxcontrol.run_guarded(rest_low_answer_rates, sessions)
    return report


def rest_low_answer_rates(sessions: sessionmaker[Session]) -> list[str]:
    """Rest the caller IDs whose answer rate fell far below their pool's (own transaction)."""
    with sessions() as session, session.begin():
        return caller_id_pools.rest_low_answer_rates(session.connection())


def plan_tick(
    session: Session, *, now: dt.datetime | None = None, options: TickOptions = TickOptions()
) -> TickReport:
    """The tick's database work inside the caller's transaction; nothing is enqueued here."""
    now = now or dt.datetime.now(dt.UTC)
    report = TickReport()
    connection = session.connection()
    if not connection.execute(_LOCK, {"key": DISPATCH_LOCK_KEY}).scalar_one():
        report.skipped = True
        return report

    moved = campaigns_module.advance_schedules(session, now)
    report.campaigns_started = moved["running"]
    report.campaigns_ended = moved["completed"]
    running = list(connection.execute(_RUNNING, {"now": now}))
    routes = trunk_routes(connection, (row.trunk_id for row in running))
    by_trunk: dict[int, list[_Campaign]] = defaultdict(list)
    for row in running:
        campaign = _Campaign.from_row(row, routes.get(row.trunk_id, []))
        if campaign.problem:
            # Nothing could be sent: leave the contacts alone until the setting is fixed.
            now_s = time.monotonic()
            if now_s - _refused_logged.get(row.name, -math.inf) >= REFUSED_LOG_EVERY_S:
                _refused_logged[row.name] = now_s
                log.error(
                    "campaign %s: not dialling, its calls cannot be built: %s",
                    row.name,
                    campaign.problem,
                )
            report.campaigns_refused.append(row.name)
            continue
        by_trunk[campaign.trunk_id].append(campaign)

    usage = trunk_usage(connection, by_trunk)
    chooser = Chooser(
        pbx_loads(connection, (r.pbx for t in by_trunk for r in routes.get(t, []))),
        options.lookahead_s,
    )
    budget = options.max_attempts_per_tick
    windows = _WindowCache(now, _rulebook(connection) if by_trunk else RuleBook())
    pools = caller_id_pools.choosers(
        connection, (c.pool_id for cs in by_trunk.values() for c in cs if c.pool_id), now
    )
    idle: list[_Campaign] = []
    queued: list[list[list[int]]] = []  # per trunk, per campaign
    for trunk_id, trunk_campaigns in by_trunk.items():
        usable = chooser.usable(routes.get(trunk_id, []))
        spare = min(usage[trunk_id].spare_capacity(options.lookahead_s), budget)
        if not usable:
            if spare > 0 and _has_due_contacts(connection, trunk_campaigns, now):
                _unrouted(report, trunk_campaigns[0].trunk_name, chooser.why_none(
                    routes.get(trunk_id, [])
                ))  # fmt: skip
            idle.extend(trunk_campaigns)
            continue
        spare = min(spare, chooser.spare(usable))
        queued.append([])
        for index, campaign in enumerate(trunk_campaigns):
            created = 0
            if spare > 0:
                # Fair share of what is left; unused share flows to the campaigns after it.
                share = math.ceil(spare / (len(trunk_campaigns) - index))
                if campaign.pace_queue is not None:
                    share = min(share, _queue_allowance(connection, campaign, usable, now, report))
                first = len(report.queued)
                created = _dispatch_campaign(
                    connection, campaign, usable, chooser, share, now, windows, options, report,
                    pools.get(campaign.pool_id) if campaign.pool_id else None,
                )  # fmt: skip
                queued[-1].append(report.queued[first:])
                spare -= created
                budget -= created
            if created == 0:
                idle.append(campaign)
    caller_id_pools.record_usage(connection, pools, now)
    # Handed out in turns: workers take tasks in order and each waits for its trunk's slot, so
    # a trunk's whole share ahead of the next trunk's would hold every trunk to one's pace.
    report.queued = interleave([interleave(campaigns) for campaigns in queued])

    report.requeued = list(
        connection.execute(
            _REQUEUE_STALE,
            {"after": options.requeue_after_s, "limit": options.max_attempts_per_tick},
        ).scalars()
    )
    # A campaign that just queued calls is not finished; the others may be.
    report.campaigns_completed = [
        c.name for c in idle if campaigns_module.complete_if_exhausted(session, c.id)
    ]
    for line in _TICK_LOG.add(report):
        log.info("%s", line)
    return report


_HAS_DUE = text(
    """
    SELECT EXISTS (SELECT 1 FROM contacts c
                    WHERE c.campaign_id = ANY(:ids) AND c.status = 'pending'
                      AND c.next_attempt_at <= :now)
    """
)


def _queue_allowance(
    connection: Connection, campaign: _Campaign, routes: list[Route], now: dt.datetime,
    report: TickReport,
) -> int:  # fmt: skip
    """The calls a queue-paced campaign may start now, by its queue's agents on the PBXs its
    calls can go through."""
    assert campaign.pace_queue is not None
    decision = queue_pacing.allowance(
        connection,
        campaign_id=campaign.id,
        queue=campaign.pace_queue,
        target=campaign.abandon_target,
        pbxs={route.pbx for route in routes},
        now=now,
    )
    report.queue_paced[campaign.name] = decision
    if decision.calls == 0:
        clock = time.monotonic()
        if clock - _queue_held_logged.get(campaign.name, -math.inf) >= QUEUE_HELD_LOG_EVERY_S:
            _queue_held_logged[campaign.name] = clock
            log.info(
                "campaign %s: no call started, %s (queue %s: %.1f agents free soon, %.1f"
                " transfers expected)",
                campaign.name, decision.reason, campaign.pace_queue, decision.supply,
                decision.demand,
            )  # fmt: skip
    return decision.calls


def _has_due_contacts(connection: Connection, campaigns: list[_Campaign], now: dt.datetime) -> bool:
    ids = [c.id for c in campaigns]
    return bool(connection.execute(_HAS_DUE, {"ids": ids, "now": now}).scalar_one())


def _unrouted(report: TickReport, trunk: str, why: str) -> None:
    """A trunk's calls wait for a PBX: in the report always, in the log now and then."""
    report.unrouted[trunk] = why
    now = time.monotonic()
    if now - _unrouted_logged.get(trunk, -math.inf) >= UNROUTED_LOG_EVERY_S:
        _unrouted_logged[trunk] = now
        log.warning("trunk %s: calls wait, %s", trunk, why)


def interleave(groups: Sequence[Sequence[int]]) -> list[int]:
    """Every item of `groups`, one from each group in turn: [[1, 2, 3], [4], [5, 6]] ->
    [1, 4, 5, 2, 6, 3]."""
    return [item for turn in itertools.zip_longest(*groups) for item in turn if item is not None]


def _dispatch_campaign(
    connection: Connection,
    campaign: _Campaign,
    routes: list[Route],
    chooser: Chooser,
    limit: int,
    now: dt.datetime,
    windows: _WindowCache,
    options: TickOptions,
    report: TickReport,
    pool: caller_id_pools.PoolDay | None = None,
) -> int:
    """Claim up to `limit` callable contacts of one campaign; returns attempts created."""
    created = 0
    # Every claimed row leaves the due set below (status or next_attempt_at changes), so the
    # next round sees new contacts.
    for _ in range(options.max_claim_rounds):
        wanted = limit - created
        if wanted <= 0:
            break
        rows = [
            _Due(r.id, r.phone_e164, tuple(r.timezones or ()), r.attempts, r.on_dnc, r.alternates)
            for r in connection.execute(
                _CLAIM,
                {
                    "campaign_id": campaign.id,
                    "now": now,
                    "limit": min(options.claim_batch, max(wanted, 1)),
                },
            )
        ]
        if not rows:
            break
        dnc: list[int] = []
        next_number: list[int] = []
        exhausted: list[int] = []
        never: list[int] = []
        later: dict[int, dt.datetime] = {}
        due_now: list[_Due] = []
        for row in rows:
            if row.on_dnc and row.alternates:
                next_number.append(row.id)
            elif row.on_dnc:
                dnc.append(row.id)
            elif row.attempts >= campaign.max_attempts:
                exhausted.append(row.id)
            else:
                opens = windows.next_open(campaign.window, row.phone_e164, row.timezones)
                if opens is None:
                    never.append(row.id)
                elif opens <= now:
                    due_now.append(row)
                else:
                    later[row.id] = opens
        if dnc:
            connection.execute(_MARK_STATUS, {"status": "dnc", "outcome": None, "ids": dnc})
        if next_number:
            moved = connection.execute(_NEXT_UNLISTED, {"ids": next_number}).scalars().all()
            report.dnc += sum(1 for status in moved if status == "dnc")
        if exhausted:
            connection.execute(
                _MARK_STATUS, {"status": "exhausted", "outcome": None, "ids": exhausted}
            )
        if never:
            connection.execute(
                _MARK_STATUS, {"status": "cancelled", "outcome": NO_WINDOW_OUTCOME, "ids": never}
            )
        held = _held_by_frequency(connection, due_now, now)
        if held:
            later.update(held)
            due_now = [c for c in due_now if c.id not in held]
        if later:
            connection.execute(_RESCHEDULE, {"ids": list(later), "ats": list(later.values())})
        if due_now and pool is not None and pool.chooser.exhausted:
            _no_caller_id(connection, campaign, due_now, now, report)
            limit = created  # none of the campaign's contacts can be called this tick
            due_now = []
        if due_now:
            ids = _create_attempts(
                connection, campaign, due_now, routes, chooser, report, pool, now
            )
            report.queued.extend(ids)
            created += len(ids)
            if chooser.spare(routes) == 0:
                limit = created  # the PBXs are full: no other round (its rows would come back)
        report.dnc += len(dnc)
        report.exhausted += len(exhausted)
        report.no_window += len(never)
        report.rescheduled += len(later)
    return created


def _no_caller_id(
    connection: Connection, campaign: _Campaign, contacts: list[_Due], now: dt.datetime,
    report: TickReport,
) -> None:  # fmt: skip
    """No number of the campaign's pool can take a call now: the contacts wait."""
    again = now + dt.timedelta(seconds=NO_CALLER_ID_RETRY_S)
    connection.execute(
        _RESCHEDULE, {"ids": [c.id for c in contacts], "ats": [again] * len(contacts)}
    )
    report.no_caller_id += len(contacts)
    now_s = time.monotonic()
    if now_s - _no_caller_id_logged.get(campaign.name, -math.inf) >= NO_CALLER_ID_LOG_EVERY_S:
        _no_caller_id_logged[campaign.name] = now_s
        log.warning(
            "campaign %s: no caller ID of its pool can take some of its calls now (numbers"
            " resting or at their daily cap, or none for the callee's country and no default);"
            " those contacts wait", campaign.name,
        )  # fmt: skip


def _create_attempts(
    connection: Connection,
    campaign: _Campaign,
    contacts: list[_Due],
    routes: list[Route],
    chooser: Chooser,
    report: TickReport,
    pool: caller_id_pools.PoolDay | None = None,
    now: dt.datetime | None = None,
) -> list[int]:
    """Queued attempts, each routed through a PBX with its caller ID and payload, for contacts
    callable now; returns their ids. Contacts beyond what the PBXs can take stay due for the
    next tick; those no number of the campaign's pool can take wait (`_no_caller_id`)."""
    ids = connection.execute(_NEXT_IDS, {"count": len(contacts)}).scalars().all()
    epoch_ms = int(time.time() * 1000)
    rows: list[dict[str, Any]] = []
    turns: dict[int, float] = {}
    invalid: list[int] = []
    waiting: list[_Due] = []  # no number of the pool can take their call now
    for contact, attempt_id in zip(contacts, ids, strict=True):
        route = chooser.pick(routes)
        if route is None:
            break  # every PBX of the trunk is full; the contact's row lock ends with the tick
        caller_id_id = None
        caller = campaign.caller(route)
        if pool is not None:
            number = pool.chooser.pick(contact.phone_e164)
            if number is None:
                chooser.unpick(route)
                waiting.append(contact)
                continue
            caller, caller_id_id = number.number, number.id
        turns[attempt_id] = chooser.last_turn
        call_id = custom_call_id(epoch_ms, attempt_id)
        try:
            payload = campaign.payload(route, call_id, contact.phone_e164, caller)
        except ValueError as exc:  # the campaign's settings were checked: it is this number
            chooser.unpick(route)
            log.warning("contact %s: number %s refused: %s", contact.id, contact.phone_e164, exc)
            invalid.append(contact.id)
            continue
        rows.append(
            {
                "id": attempt_id,
                "custom_call_id": call_id,
                "contact_id": contact.id,
                "pbx": route.pbx,
                "payload": payload,
                "caller_id": caller,
                "caller_id_id": caller_id_id,
                "phone_e164": contact.phone_e164,
            }
        )
    if waiting:
        _no_caller_id(connection, campaign, waiting, now or _utcnow(), report)
    if invalid:
        connection.execute(
            _MARK_STATUS, {"status": "cancelled", "outcome": INVALID_NUMBER_OUTCOME, "ids": invalid}
        )
        report.invalid_numbers += len(invalid)
    if not rows:
        return []
    params = {"rows": json.dumps(rows), "campaign_id": campaign.id, "trunk_id": campaign.trunk_id}
    created = connection.execute(_CREATE_ATTEMPTS, params).all()
    if pool is not None:
        # The numbers' calls today: only attempts that were created count.
        for row in created:
            pool.picked[row.caller_id_id] = pool.picked.get(row.caller_id_id, 0) + 1
    # In the order their PBXs' pacing can send them (`dialer.dialing.routing`).
    return sorted((r.id for r in created), key=lambda attempt_id: (turns[attempt_id], attempt_id))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# The calling rules as this process last read them; read again when their version moves.
_RULEBOOK = RuleBook(version=-1)
_FREQUENCY: tuple[FrequencyRule, ...] = ()


def _rulebook(connection: Connection) -> RuleBook:
    global _RULEBOOK, _FREQUENCY
    if rules_store.load_version(connection) != _RULEBOOK.version:
        _RULEBOOK, _FREQUENCY = rules_store.load_rulebook(connection)
    return _RULEBOOK


_HISTORIES = text(
    f"""
    SELECT o.phone_e164, o.sent_at, {frequency.CONVERSATION_AT_SQL} AS conversation_at
      FROM call_attempts o
     WHERE o.phone_e164 = ANY(CAST(:phones AS text[])) AND o.sent_at >= :since
    """
)


def _held_by_frequency(
    connection: Connection, contacts: list[_Due], now: dt.datetime
) -> dict[int, dt.datetime]:
    """Contacts a frequency rule holds now, with when it lets them be called. The last checks
    before each send judge again with the number locked (two campaigns at once); this spares
    the attempts and pacing slots those checks would refuse."""
    if not _FREQUENCY or not contacts:
        return {}
    since = now - frequency.lookback(_FREQUENCY)
    sent: dict[str, list[dt.datetime]] = defaultdict(list)
    talks: dict[str, list[dt.datetime]] = defaultdict(list)
    phones = sorted({c.phone_e164 for c in contacts})
    for r in connection.execute(_HISTORIES, {"phones": phones, "since": since}):
        sent[r.phone_e164].append(r.sent_at)
        if r.conversation_at is not None:
            talks[r.phone_e164].append(r.conversation_at)
    held: dict[int, dt.datetime] = {}
    for contact in contacts:
        hold = frequency.held_until(
            _FREQUENCY, now, sent.get(contact.phone_e164, ()), talks.get(contact.phone_e164, ())
        )
        if hold is not None:
            held[contact.id] = hold[0]
    return held


class _WindowCache:
    """Window decisions for one tick, shared by contacts with the same zones and rules."""

    def __init__(self, now: dt.datetime, rules: RuleBook) -> None:
        self.now = now
        self.rules = rules
        self._zones: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._opens: dict[tuple[Any, ...], dt.datetime | None] = {}

    def next_open(
        self, window: CallingWindow, phone_e164: str, stored: tuple[str, ...]
    ) -> dt.datetime | None:
        """When the contact may next be called (`now` if now); None if it never can."""
        zones = self._zones.get(stored) if stored else None
        if zones is None:
            zones = calling_window.zones_for(phone_e164, stored)
            # Only stored zones that were used as they are can be shared; a fallback depends
            # on the number.
            if stored and zones == stored:
                self._zones[stored] = zones
        scopes = self.rules.scopes_for(phone_e164)
        key = (window, scopes, zones)
        if key not in self._opens:
            start, end = window.effective_hours
            schedule = window.schedule()
            if scopes:
                schedule = schedule.intersect(self.rules.schedule(scopes) or schedule)
            if not zones or start >= end:
                opens = None
            elif calling_window.is_open(schedule, zones, self.now):
                opens = self.now
            else:
                # No common opening within the horizon (zones far apart, rules or holidays
                # leaving none that soon): look again then.
                found = calling_window.next_open(schedule, zones, self.now)
                opens = found or self.now + calling_window.HORIZON
            self._opens[key] = opens
        return self._opens[key]
