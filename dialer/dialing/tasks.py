"""Celery tasks: thin wrappers over `dialer.dialing.dispatch` and `dialer.dialing.originate`.

Neither task is ever retried by Celery: a contact's next attempt is a database row with a due
time, and a task that runs twice finds nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from dialer.dialing.celery_app import (
    DISPATCH_TASK,
    ORIGINATE_TASK,
    DialerCelery,
    enqueue_originates,
)
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import ClaimInterrupted, originate_attempt

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
    report = run_tick(
        runtime.sessions,
        lambda ids: enqueue_originates(app, ids),
        options=app.worker_options.tick,
    )
    return {
        "skipped": report.skipped,
        "queued": len(report.queued),
        "requeued": len(report.requeued),
        "dnc": report.dnc,
        "rescheduled": report.rescheduled,
    }


@shared_task(name=ORIGINATE_TASK, bind=True, ignore_result=True)
def originate_call(self: Task, attempt_id: int) -> str:
    """Send the Originate of one call attempt, at most once."""
    app = _app(self)
    runtime = app.runtime
    for turn in range(2):
        conn = runtime.connection()
        try:
            result = originate_attempt(
                conn,
                int(attempt_id),
                runtime.ami_for,
                send_timeout=app.worker_options.send_timeout_s,
                reconnect=runtime.connection,
            )
        except ClaimInterrupted:
            # The connection died under the claim (a Postgres restart): claim again on a
            # fresh one rather than leave the attempt for the tick's requeue, a minute on.
            runtime.drop_connection(conn)
            if turn:
                raise
            continue
        return result.value
    raise AssertionError("unreachable")
