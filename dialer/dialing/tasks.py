"""Celery tasks: thin wrappers over `dialer.dialing.dispatch` and `dialer.dialing.originate`.

Neither task is ever retried by Celery: a contact's next attempt is a database row with a due
time, and a task that runs twice finds nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy.exc
from celery import Task, shared_task

from dialer.dialing.celery_app import (
    DISPATCH_TASK,
    ORIGINATE_TASK,
    DatabaseWait,
    DialerCelery,
    enqueue_originates,
)
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import ClaimInterrupted, new_claim_token, originate_attempt

log = logging.getLogger(__name__)


def _app(task: Task) -> DialerCelery:
    app = task.app
    if not isinstance(app, DialerCelery):
        raise TypeError(f"{task.name} must run under a dialer Celery app, not {app!r}")
    return app


@shared_task(name=DISPATCH_TASK, bind=True, ignore_result=True)
def dispatch_tick(self: Task) -> dict[str, Any]:
    """Claim due contacts, commit their call attempts, then enqueue one originate each."""
    app = _app(self)
    runtime = app.runtime
    try:
        report = run_tick(
            runtime.sessions,
            lambda ids: enqueue_originates(app, ids),
            options=app.worker_options.tick,
        )
    except sqlalchemy.exc.OperationalError as exc:
        # The database went away under the tick (a restart, a partition): its transaction
        # is rolled back, and the next tick, a second on, tries again on a fresh connection.
        log.warning("tick skipped: database unavailable (%s)", str(exc.orig).strip()[:200])
        return {"skipped": True, "queued": 0, "requeued": 0, "dnc": 0, "rescheduled": 0}
    return {
        "skipped": report.skipped,
        "queued": len(report.queued),
        "requeued": len(report.requeued),
        "dnc": report.dnc,
        "rescheduled": report.rescheduled,
    }


@shared_task(name=ORIGINATE_TASK, bind=True, ignore_result=True)
def originate_call(self: Task, attempt_id: int) -> str:
    """Send the Originate of one call attempt, at most once.

    A database that cannot be reached before or under the claim (a Postgres restart, a
    partition) is waited for, up to `WorkerOptions.database_wait_s`: the call goes out as soon
    as it is back, not a minute later at the tick's requeue. The claim is taken again with
    this run's token, which takes back only this run's own claim.
    """
    app = _app(self)
    runtime = app.runtime
    options = app.worker_options
    token = new_claim_token()
    waiting = DatabaseWait(options.database_wait_s)
    connect_timeout = None
    while True:
        try:
            conn = runtime.connection(connect_timeout)
        except psycopg.OperationalError as exc:
            waiting.wait_or_raise(exc)
            connect_timeout = DatabaseWait.CONNECT_TIMEOUT_S
            continue
        try:
            result = originate_attempt(
                conn,
                int(attempt_id),
                runtime.ami_for,
                send_timeout=options.send_timeout_s,
                reconnect=lambda: runtime.reconnect(waiting),
                claim_token=token,
            )
        except ClaimInterrupted as exc:
            runtime.drop_connection(conn)
            waiting.wait_or_raise(exc)
            connect_timeout = DatabaseWait.CONNECT_TIMEOUT_S
            continue
        return result.value
