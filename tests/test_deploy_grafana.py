"""The Grafana dashboard and its provisioning, checked without a Grafana: panels are laid out on
the 24-column grid without overlapping, every query uses the provisioned datasource and only
template variables that exist, and the panels the issue asks for are there. (That the metrics
the queries name are really exported is checked against a running heed in test_deploy_live.py.)"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.deploy_helpers import DEPLOY, promql_metrics

GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "heed.json").read_text())


def targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_queries_use_the_provisioned_datasource(dashboard):
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (provisioned,) = datasources["datasources"]
    expected = {"type": provisioned["type"], "uid": provisioned["uid"]}
    assert targets(dashboard)
    for panel, target in targets(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        assert target["datasource"] == expected, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == expected


def test_variables_used_are_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    for panel, target in targets(dashboard):
        used = set(re.findall(r"\$(\w+)", target["expr"]))
        assert used <= defined | builtin, (panel["title"], used)


def test_layout(dashboard):
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_required_views_are_present(dashboard):
    """Throughput, latency percentiles, time to first token, queue depth, batch size, KV slots, errors,
    memory (resident per pod, KV cache bytes)."""
    by_metric: dict[str, list[str]] = {}
    for _, target in targets(dashboard):
        for metric in promql_metrics(target["expr"]):
            by_metric.setdefault(metric, []).append(target["expr"])
    for metric in (
        "heed_requests_total",
        "heed_request_duration_seconds_bucket",
        "heed_time_to_first_token_seconds_bucket",
        "heed_queue_depth",
        "heed_decode_batch_size_bucket",
        "heed_kv_slots_used",
        "heed_kv_slots_total",
        "process_resident_memory_bytes",
        "heed_kv_cache_bytes",
    ):
        assert metric in by_metric, metric
    # every target exports process_resident_memory_bytes (Prometheus scrapes itself): keep heed's
    assert all("heed_ready" in e for e in by_metric["process_resident_memory_bytes"])
    assert any("histogram_quantile(0.99" in e for e in by_metric["heed_request_duration_seconds_bucket"])
    assert any('status=~"5.."' in e or 'status!~"2.."' in e for e in by_metric["heed_requests_total"])


def test_provisioned_dashboard_folder_matches_compose_mount():
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "heed.yml").read_text())["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_promql_metric_extraction():
    """The helper the metric-name checks rely on: labels, ranges, grouping, functions are not metrics."""
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(heed_x_bucket{model=~"$model", le!="a b"}[5m])))'
        " / on (model) group_left heed_y and ignoring (pod) heed_z offset 5m > bool 2"
    )
    assert promql_metrics(expr) == {"heed_x_bucket", "heed_y", "heed_z"}
    assert promql_metrics('up{job=~".*heed.*"} == 0') == {"up"}
