"""Prometheus metrics of a real `dialer worker` (several processes, summed by its supervisor)
and a real `dialer listen`, scraped during and after a simulated campaign: they agree with
Postgres."""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    rows,
    scalar,
    simulator_numbers,
    wait_until,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name: (labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(k) == v for k, v in labels.items())
    )


def scrapable(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_scraped_counters_agree_with_postgres(
    session_factory: Any, pbx_sim: Any, worker_processes: Any
) -> None:
    trunk = add_trunk(session_factory, "MC", cps=20, max_channels=100)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(60))
    paused = add_campaign(session_factory, trunk, "later", status="paused")
    add_contacts(session_factory, paused, simulator_numbers(5, start=100))
    worker_port, listener_port = free_port(), free_port()
    listener = worker_processes(
        ami=pbx_sim.server,
        command=[sys.executable, "-m", "dialer", "listen", "--metrics-port", str(listener_port)],
        ready=0,
    )
    wait_until(lambda: scrapable(listener_port), 20, message="the listener's /metrics")
    worker = worker_processes(
        ami=pbx_sim.server,
        command=[
            sys.executable, "-m", "dialer", "worker", "--processes", "2",
            "--metrics-port", str(worker_port),
        ],
        ready=2,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                scalar(session_factory, "SELECT status FROM campaigns WHERE id = :id", id=campaign)
                == "completed"
            ),
            90,
            message="the campaign to complete",
        )
        # The listener counts a close once its batch is committed, a moment after the
        # campaign may be seen complete.
        wait_until(
            lambda: total(scrape(listener_port), "dialer_attempts_ended_total") >= 60,
            10,
            message="the listener to count its last closes",
        )
        worker_samples = scrape(worker_port)
        listener_samples = scrape(listener_port)
    finally:
        worker.stop()
        listener.stop()
    sent = scalar(session_factory, "SELECT count(*) FROM call_attempts WHERE sent_at IS NOT NULL")
    assert sent == 60
    # Every process's Originates, summed by the supervisor: one per attempt sent.
    assert total(worker_samples, "dialer_originates_total", result="sent") == sent
    assert total(worker_samples, "dialer_originates_total", trunk="MC", pbx="default") == sent
    assert total(worker_samples, "dialer_originate_response_seconds_count") == sent
    # (One per slot taken: a slot dropped on a loaded machine is waited for again.)
    assert total(worker_samples, "dialer_pacing_wait_seconds_count") >= sent
    # The listener's closes, by outcome: the campaign's.
    outcomes = Counter(
        {
            r.outcome: r.n
            for r in rows(
                session_factory,
                "SELECT outcome, count(*) AS n FROM call_attempts WHERE status = 'ended'"
                " GROUP BY outcome",
            )
        }
    )
    scraped = Counter(
        {
            labels["outcome"]: int(value)
            for labels, value in listener_samples["dialer_attempts_ended_total"]
            if value
        }
    )
    assert scraped == outcomes and sum(outcomes.values()) == 60
    stored = total(listener_samples, "dialer_events_total", fate="stored")
    assert 0 < stored <= total(listener_samples, "dialer_events_received_total")
    assert total(listener_samples, "dialer_event_to_row_seconds_count") >= stored
    assert total(listener_samples, "dialer_ami_connected", pbx="default") == 1
    assert total(listener_samples, "dialer_ami_connects_total", pbx="default") >= 1
    # The deployment's gauges, read from Postgres and the broker at the scrape.
    assert total(worker_samples, "dialer_deployment_scrape_ok") == 2  # database and broker
    assert total(worker_samples, "dialer_attempts_queued_in_broker") == 0
    assert total(worker_samples, "dialer_attempts_originating_stale") == 0
    assert total(worker_samples, "dialer_calls_up") == 0
    assert total(worker_samples, "dialer_pbx_up", pbx="default") == 1  # its listener runs
    assert total(worker_samples, "dialer_pbx_rate", pbx="default") > 0
    # The completed campaign is no longer live; the paused one has all its contacts left.
    assert dict(
        (labels["campaign"], value) for labels, value in worker_samples["dialer_contacts_remaining"]
    ) == {"later": 5}
    assert "dialer_campaign_attempts_finished_total" not in worker_samples
    # Bounded labels: no call id or number anywhere.
    for samples in (worker_samples, listener_samples):
        for name, found in samples.items():
            if not name.startswith("dialer_"):
                continue  # prometheus_client's own: the process, the garbage collector
            for labels, _ in found:
                allowed = {
                    "pbx",
                    "result",
                    "fate",
                    "outcome",
                    "le",
                    "trunk",
                    "campaign",
                    "queue",
                    "part",
                }
                assert set(labels) <= allowed, (name, labels)


@pytest.mark.parametrize(
    "value, port",
    [("", None), ("9100", 9100), (" 9101 ", 9101), ("0", "error"), ("70000", "error"),
     ("http", "error")],
)  # fmt: skip
def test_the_metrics_port_settings(value: str, port: int | str | None) -> None:
    from dialer.settings import Settings, SettingsError

    for name, field in (
        ("DIALER_WORKER_METRICS_PORT", "worker_metrics_port"),
        ("DIALER_LISTENER_METRICS_PORT", "listener_metrics_port"),
    ):
        if port == "error":
            with pytest.raises(SettingsError, match=name):
                Settings.from_env({name: value})
        else:
            assert getattr(Settings.from_env({name: value}), field) == port


@pytest.mark.slow
def test_one_worker_process_with_a_forking_pool_is_counted_too(
    session_factory: Any, pbx_sim: Any, worker_processes: Any
) -> None:
    """`dialer worker --processes 1 --pool prefork` with DIALER_WORKER_METRICS_PORT: its
    tasks run in forked pool processes, and their Originates are still in /metrics."""
    trunk = add_trunk(session_factory, "MC", cps=20, max_channels=100)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(10, ending="04"))
    port = free_port()
    worker = worker_processes(
        ami=pbx_sim.server,
        command=[
            sys.executable, "-m", "dialer", "worker", "--processes", "1", "--pool", "prefork",
            "-c", "2",
        ],
        env={"DIALER_WORKER_METRICS_PORT": str(port)},
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                scalar(
                    session_factory, "SELECT count(*) FROM call_attempts WHERE sent_at IS NOT NULL"
                )
                == 10
            ),
            60,
            message="every call sent",
        )
        wait_until(
            lambda: total(scrape(port), "dialer_originates_total", result="sent") == 10,
            10,
            message="the forked pool's Originates counted",
        )
    finally:
        worker.stop()
