"""How the dialer's processes log: lines for people, or one JSON object per line for log
shippers (`DIALER_LOG_FORMAT=json`).

A line about a call carries its `custom_call_id` (logged with `extra=call_fields(call_id)`):
in the text of the message, and as a field of its own in JSON. Nothing logged holds a secret:
URLs go through `settings.redact_url`, AMI secrets are never put in a message.

Celery beat says "Sending due task" at INFO for every dispatch tick, once a second: that line is
kept for DEBUG (`quiet_beat`). So is the worker's "Discarding revoked task" for a tick that
expired before a busy worker took it: the next tick comes a second later.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# Record attributes written as JSON fields when a log call sets them (`extra=`).
FIELDS = ("custom_call_id", "attempt_id", "pbx", "campaign")
_BEAT_SENDING = "Scheduler: Sending due task"
_DISCARDING = "Discarding revoked task"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the `FIELDS`
    a call set, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """The process's root logging: `level`, in `log_format`, to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])


def use_format(logger: logging.Logger, log_format: str) -> None:
    """Give `logger`'s handlers (those Celery set up) the dialer's format, when it is JSON."""
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def call_fields(call_id: str | None, **more: Any) -> dict[str, Any]:
    """`extra=` for a line about one call."""
    return {"custom_call_id": call_id, **more}


class _BeatSendingAtDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(_BEAT_SENDING):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("celery.beat").isEnabledFor(logging.DEBUG)
        return True


def quiet_beat() -> None:
    """Beat's per-tick "Sending due task" line at DEBUG instead of INFO (idempotent)."""
    beat = logging.getLogger("celery.beat")
    if not any(isinstance(f, _BeatSendingAtDebug) for f in beat.filters):
        beat.addFilter(_BeatSendingAtDebug())


class _ExpiredTaskAtDebug(logging.Filter):
    def __init__(self, task_name: str) -> None:
        super().__init__()
        self.task_name = task_name

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if (
            isinstance(record.msg, str)
            and record.msg.startswith(_DISCARDING)
            and args[:1] == (self.task_name,)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("celery.worker.request").isEnabledFor(logging.DEBUG)
        return True


def quiet_expired(task_name: str) -> None:
    """The worker's "Discarding revoked task" line for `task_name` at DEBUG (idempotent): a
    periodic task that expired waiting is replaced by its next run."""
    request = logging.getLogger("celery.worker.request")
    if not any(
        isinstance(f, _ExpiredTaskAtDebug) and f.task_name == task_name for f in request.filters
    ):
        request.addFilter(_ExpiredTaskAtDebug(task_name))
