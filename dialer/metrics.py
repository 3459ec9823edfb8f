"""The dialer's Prometheus metrics, and serving them on `/metrics`.

Labels are bounded: PBX names, Originate results, outcomes; never a call or a number.

`dialer worker` runs several processes: each counts in files under
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode, set by the supervisor before
they start), and the supervisor serves their sum (`serve(..., multiprocess_dir=...)`).
`dialer listen` is one process and serves its own. Nothing is served unless a port is given
(`DIALER_WORKER_METRICS_PORT`, `DIALER_LISTENER_METRICS_PORT`, or `--metrics-port`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess

# -- worker ----------------------------------------------------------------------------------

ORIGINATES = Counter(
    "dialer_originates_total",
    "Originate tasks by what became of their attempt (sent, not_sent, rejected, fate_unknown...)",
    ["trunk", "pbx", "result"],
)
SEND_LATENCY = Histogram(
    "dialer_originate_response_seconds",
    "From writing an Originate to the PBX's response (Success or Error)",
    ["pbx"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PACING_WAIT = Histogram(
    "dialer_pacing_wait_seconds",
    "Time an Originate waited for its trunk's and PBX's pacing slot",
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)

# -- listener --------------------------------------------------------------------------------

EVENTS_RECEIVED = Counter(
    "dialer_events_received_total", "AMI events the listener received", ["pbx"]
)
EVENTS = Counter(
    "dialer_events_total",
    "AMI events the listener used, by what became of them: stored (for a call of the"
    " database), unknown (a call it does not know), uncorrelated (no call id)",
    ["pbx", "fate"],
)
EVENT_TO_ROW = Histogram(
    "dialer_event_to_row_seconds",
    "From an AMI event's arrival to its row committed in Postgres",
    ["pbx"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ENDED = Counter(
    "dialer_attempts_ended_total",
    "Call attempts the listener closed, by outcome (reconciliation's closes included)",
    ["pbx", "outcome"],
)
AMI_CONNECTED = Gauge(
    "dialer_ami_connected",
    "1 while the listener's AMI connection to the PBX is up",
    ["pbx"],
    multiprocess_mode="liveall",
)
AMI_RECONNECTS = Counter(
    "dialer_ami_connects_total", "AMI connections the listener made to the PBX", ["pbx"]
)
QUEUE_MEMBERS = Gauge(
    "dialer_queue_members",
    "Members of the PBX's queues as its listener follows them: free, busy (ringing, in a call"
    " or wrapping up), paused, or unreachable",
    ["pbx", "queue", "state"],
    multiprocess_mode="liveall",
)


def serve(
    port: int,
    addr: str = "0.0.0.0",
    multiprocess_dir: str | None = None,
    collectors: Sequence[Any] = (),
) -> Any:
    """Serve `/metrics` on `port` from a thread of this process: this process's metrics, or
    with `multiprocess_dir` the sum of those its children wrote there; plus `collectors`
    (read at each scrape). Returns the server."""
    registry: Any = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    for collector in collectors:
        registry.register(collector)
    server, _ = start_http_server(port, addr, registry=registry)
    return server


def process_exited(pid: int, multiprocess_dir: str) -> None:
    """A child that wrote metrics exited: its live gauges stop counting."""
    prometheus_multiprocess.mark_process_dead(pid, multiprocess_dir)
