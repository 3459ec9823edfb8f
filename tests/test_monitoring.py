"""The monitoring kept in the repository: the Grafana dashboard loads, queries only metrics the
dialer exports, and docker-compose's `monitoring` profile is wired to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import dialer.metrics  # noqa: F401  (defines the metrics in the registry)
from dialer.reports import live_metrics

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "dialer" / "monitoring"
DASHBOARD = json.loads((MONITORING / "grafana" / "dashboards" / "dialer.json").read_text())
COMPOSE = (ROOT / "docker-compose.yml").read_text()
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported_names() -> set[str]:
    """Every sample name the dialer's metrics can have (labelled ones have no sample yet)."""
    names = set()
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        # (`x_created`: when a metric was made, a family of its own in this format.)
        if family.name.startswith("dialer_") and not family.name.endswith("_created"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    for name, kind in live_metrics.FAMILIES.items():  # the deployment's, read at each scrape
        names.update(name + suffix for suffix in SUFFIXES[kind])
    return names


def expressions() -> list[str]:
    return [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] and isinstance(DASHBOARD["schemaVersion"], int)
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    provisioned = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (uid,) = re.findall(r"uid: (\S+)", provisioned.read_text())
    for panel in DASHBOARD["panels"]:
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
        assert all(isinstance(panel["gridPos"][k], int) for k in ("x", "y", "w", "h"))
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])


@pytest.mark.parametrize("expr", expressions())
def test_every_query_asks_for_metrics_the_dialer_exports(expr: str) -> None:
    used = set(re.findall(r"\bdialer_[a-z0-9_]+", expr))
    assert used and used <= exported_names(), used - exported_names()


def test_every_exported_metric_is_on_the_dashboard() -> None:
    used = {name for expr in expressions() for name in re.findall(r"\bdialer_[a-z0-9_]+", expr)}
    families = {re.sub(r"(_total|_bucket|_count|_sum)$", "", name) for name in used}
    for name in exported_names():
        assert re.sub(r"(_total|_bucket|_count|_sum)$", "", name) in families, name


def test_the_monitoring_profile_is_wired_to_the_dialer() -> None:
    for service in ("prometheus", "grafana"):
        block = COMPOSE.split(f"\n  {service}:\n", 1)[1].split("\n\n", 1)[0]
        assert 'profiles: ["monitoring"]' in block, service
    for mounted in re.findall(r"- \./(dialer/monitoring/[^:]+):", COMPOSE):
        assert (ROOT / mounted).exists(), mounted
    scrape = (MONITORING / "prometheus.yml").read_text()
    for service, variable, port in (
        ("worker", "DIALER_WORKER_METRICS_PORT", 9100),
        ("listener", "DIALER_LISTENER_METRICS_PORT", 9101),
    ):
        assert f"{variable}: ${{{variable}:-{port}}}" in COMPOSE
        assert re.search(rf"names: \[{service}\]\n\s+type: A\n\s+port: {port}", scrape), service
