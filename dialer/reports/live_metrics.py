"""Metrics of the deployment rather than of one process, read when Prometheus scrapes: the
originate tasks waiting in the broker, attempts stuck `originating`, calls up by trunk and
PBX, contacts left and attempts finished per live campaign. `dialer worker` serves them with
its own (`metrics.serve(..., collectors=...)`).

Each scrape costs three small queries and a queue-length read. A part that cannot be read
(Postgres or the broker down) is left out of that scrape, and said in
`dialer_deployment_scrape_ok`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kombu.exceptions import ChannelError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from dialer.campaigns import pbxs

log = logging.getLogger(__name__)

# An attempt claimed this long ago and still `originating` is worth a look.
STALE_ORIGINATING_S = 60.0

_OPEN = text(
    """
    SELECT count(*) FILTER (WHERE a.status = 'originating'
                              AND a.queued_at < now() - make_interval(secs => :stale)) AS stale,
           coalesce(json_agg(json_build_array(t.name, a.pbx))
                    FILTER (WHERE a.status = 'up'), '[]') AS up
      FROM call_attempts a JOIN trunks t ON t.id = a.trunk_id
     WHERE a.status IN ('originating', 'up')
    """
)
_CAMPAIGNS = text(
    """
    SELECT c.name,
           (SELECT count(*) FROM contacts k
             WHERE k.campaign_id = c.id AND k.status IN ('pending', 'dialing')) AS remaining
      FROM campaigns c WHERE c.status IN ('running', 'paused', 'scheduled')
    """
)
_PBXS = text(
    f"""
    SELECT p.name, {pbxs.effective_state_sql("p")} AS state, {pbxs.current_rate_sql("p")} AS rate,
           p.latency_ms
      FROM pbxs p WHERE p.enabled
    """
)
_FINISHED = text(
    """
    SELECT c.name, coalesce(s.outcome, 'not_sent') AS outcome, sum(s.attempts) AS n
      FROM campaign_attempt_stats s JOIN campaigns c ON c.id = s.campaign_id
     WHERE c.status IN ('running', 'paused', 'scheduled')
     GROUP BY 1, 2
    """
)


# What the collector yields, name -> type (for the dashboard's check).
FAMILIES = {
    "dialer_deployment_scrape_ok": "gauge",
    "dialer_attempts_queued_in_broker": "gauge",
    "dialer_attempts_originating_stale": "gauge",
    "dialer_calls_up": "gauge",
    "dialer_contacts_remaining": "gauge",
    "dialer_campaign_attempts_finished": "counter",
    "dialer_pbx_up": "gauge",
    "dialer_pbx_rate": "gauge",
    "dialer_pbx_originate_response_p90_seconds": "gauge",
}


class DeploymentCollector(Collector):
    def __init__(self, engine: Engine, app: Any) -> None:
        self.engine = engine
        self.app = app

    def collect(self) -> Iterator[Metric]:
        ok = GaugeMetricFamily(
            "dialer_deployment_scrape_ok",
            "1 when the part (database, broker) could be read for this scrape",
            labels=["part"],
        )
        try:
            yield from self._broker()
            ok.add_metric(["broker"], 1)
        except Exception as exc:
            log.debug("metrics: broker not read: %s", exc)
            ok.add_metric(["broker"], 0)
        try:
            yield from self._database()
            ok.add_metric(["database"], 1)
        except Exception as exc:
            log.debug("metrics: database not read: %s", exc)
            ok.add_metric(["database"], 0)
        yield ok

    def _broker(self) -> Iterator[Metric]:
        queue = self.app.broker_names.originate_queue
        with self.app.connection_for_write() as conn, conn.channel() as channel:
            try:
                depth = channel.queue_declare(queue, passive=True).message_count
            except ChannelError as exc:
                # Redis keeps no empty list: a queue with nothing waiting is "not found".
                if getattr(exc, "code", None) != 404 and "NOT_FOUND" not in str(exc):
                    raise
                depth = 0
        family = GaugeMetricFamily(
            "dialer_attempts_queued_in_broker",
            "Originate tasks waiting in the broker for a worker",
            labels=["queue"],
        )
        family.add_metric([queue], depth)
        yield family

    def _database(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            open_row = conn.execute(_OPEN, {"stale": STALE_ORIGINATING_S}).one()
            campaigns = conn.execute(_CAMPAIGNS).all()
            finished = conn.execute(_FINISHED).all()
            pbx_rows = conn.execute(_PBXS).all()
        stale = GaugeMetricFamily(
            "dialer_attempts_originating_stale",
            f"Attempts still originating {STALE_ORIGINATING_S:.0f} s after they were queued",
        )
        stale.add_metric([], open_row.stale)
        up = GaugeMetricFamily(
            "dialer_calls_up", "Calls up, by trunk and PBX", labels=["trunk", "pbx"]
        )
        counts: dict[tuple[str, str], int] = {}
        for trunk, pbx in open_row.up:
            counts[(trunk, pbx)] = counts.get((trunk, pbx), 0) + 1
        for (trunk, pbx), n in sorted(counts.items()):
            up.add_metric([trunk, pbx], n)
        remaining = GaugeMetricFamily(
            "dialer_contacts_remaining",
            "Contacts of a live campaign still to be dialled or in a call",
            labels=["campaign"],
        )
        for row in campaigns:
            remaining.add_metric([row.name], row.remaining)
        ended = CounterMetricFamily(
            "dialer_campaign_attempts_finished",
            "Finished attempts of a live campaign, by outcome (not_sent: never sent)",
            labels=["campaign", "outcome"],
        )
        for row in finished:
            ended.add_metric([row.name, row.outcome], int(row.n))
        pbx_up = GaugeMetricFamily(
            "dialer_pbx_up", "1 when the PBX takes calls (its state is up)", labels=["pbx"]
        )
        rate = GaugeMetricFamily(
            "dialer_pbx_rate",
            "Originates per second the PBX may be sent now (back-pressure lowers it)",
            labels=["pbx"],
        )
        latency = GaugeMetricFamily(
            "dialer_pbx_originate_response_p90_seconds",
            "p90 of the time from Originate to its OriginateResponse, as back-pressure measures it",
            labels=["pbx"],
        )
        for row in pbx_rows:
            pbx_up.add_metric([row.name], 1 if row.state == pbxs.UP else 0)
            rate.add_metric([row.name], float(row.rate))
            if row.latency_ms is not None:
                latency.add_metric([row.name], row.latency_ms / 1000)
        yield from (stale, up, remaining, ended, pbx_up, rate, latency)
