"""The deployment against a real heed (`heed serve` on 127.0.0.1 with tiny models):

- every metric that the Grafana dashboard, the alert rules and the prometheus-adapter rule read is
  one heed really exports;
- a real Prometheus (Debian package) scrapes heed with the repository's alert rules loaded, and a
  heed metric is read back through its query API;
- a short, bounded headless locust run of loadtests/locustfile.py, well below capacity, has no
  failed request.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from loadtests.server import free_port
from tests.deploy_helpers import (
    DEPLOY,
    ROOT,
    build_deploy_repo,
    evaluated_rules,
    exported_series,
    get,
    heed_server,
    post_json,
    prometheus_query,
    promql_metrics,
    stop,
    tool,
    wait_until,
)

PROMETHEUS_MADE = {"up"}  # series Prometheus itself adds to every target


@pytest.fixture(scope="module")
def heed(tiny_dir, tmp_path_factory):
    repo = build_deploy_repo(tiny_dir, tmp_path_factory.mktemp("deploy-models"))
    with heed_server(repo, tmp_path_factory.mktemp("deploy-logs") / "heed.log") as url:
        yield url


def send_traffic(url: str) -> None:
    """One request of each kind, so that every labelled series has samples."""
    requests = [
        ("/v1/translate", {"text": ["hello world", "one two three"], "max_new_tokens": 6}),
        ("/v1/summarize", {"text": "a long report about the weather " * 5, "max_new_tokens": 6, "truncate": True}),
        ("/v1/generate", {"model": "tiny", "input": "hello world", "stream": True, "max_new_tokens": 6}),
        ("/v1/translate", {"text": "hello", "no_such_option": 1}),  # a 422, for the error panels
    ]
    for route, body in requests:
        status, payload = post_json(url + route, json.dumps(body).encode())
        expected = 422 if "no_such_option" in body else 200
        assert status == expected, (route, status, payload[:300])


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "heed.json").read_text())
    names = {m for p in dashboard["panels"] for t in p.get("targets", []) for m in promql_metrics(t["expr"])}
    for variable in dashboard["templating"]["list"]:
        names.update(re.findall(r"label_values\((\w+)", variable["query"]["query"]))
    return names


def alert_metrics() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "heed-alerts.yml").read_text())
    return {m for group in rules["groups"] for rule in group["rules"] for m in promql_metrics(rule["expr"])}


def adapter_metrics() -> set[str]:
    (document,) = yaml.safe_load_all((DEPLOY / "k8s" / "prometheus-adapter" / "adapter-config.yaml").read_text())
    rules = yaml.safe_load(document["data"]["config.yaml"])["rules"]
    return {m for rule in rules for m in promql_metrics(rule["seriesQuery"])}


def test_every_metric_the_deployment_reads_is_exported_by_heed(heed):
    send_traffic(heed)
    status, body = get(heed + "/metrics")
    assert status == 200
    text = body.decode()
    declared = exported_series(text)
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for source, names in [
        ("dashboard", dashboard_metrics()),
        ("alerts", alert_metrics()),
        ("adapter", adapter_metrics()),
    ]:
        names -= PROMETHEUS_MADE
        assert names, source
        assert names <= declared, f"{source} reads metrics heed does not export: {sorted(names - declared)}"
        # after one request of each kind, each of them has samples (not only a declaration)
        assert names <= sampled, f"{source}: no samples yet for {sorted(names - sampled)}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_image_healthcheck_command_probes_heed(heed, dockerfile):
    """The HEALTHCHECK command, run as the container would (HEED_PORT set), passes against a live
    heed and fails when nothing listens."""
    text = (DEPLOY / "docker" / dockerfile).read_text().replace("\\\n", " ")
    command = json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE).group(1))
    assert command[0] == "python"
    port = heed.rsplit(":", 1)[1]
    alive = subprocess.run([sys.executable, *command[1:]], env=os.environ | {"HEED_PORT": port}, timeout=30)
    assert alive.returncode == 0
    nobody = subprocess.run(
        [sys.executable, *command[1:]],
        env=os.environ | {"HEED_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
    )
    assert nobody.returncode != 0


@pytest.fixture
def prometheus(heed, tmp_path):
    """Debian's prometheus scraping heed every second, with heed's alert rules loaded."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "heed-alerts.yml")],
        "scrape_configs": [{"job_name": "heed", "static_configs": [{"targets": [heed.removeprefix("http://")]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp_path / "prometheus.log"
    command = [
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                return get(url + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, 60, what="prometheus ready")
        yield url
    finally:
        stop(process)


def test_prometheus_scrapes_heed_and_reads_its_metrics(heed, prometheus):
    status, payload = post_json(heed + "/v1/translate", json.dumps({"text": "hello world"}).encode())
    assert status == 200, payload[:300]
    served = wait_until(
        lambda: prometheus_query(prometheus, 'heed_requests_total{job="heed", route="/v1/translate", status="200"}'),
        60,
        what="heed_requests_total in Prometheus",
    )
    assert sum(float(series["value"][1]) for series in served) >= 1
    (info,) = prometheus_query(prometheus, 'heed_model_info{model="tiny"}')
    assert info["metric"]["task"] == "translate" and float(info["value"][1]) == 1
    (ready,) = prometheus_query(prometheus, "heed_ready")
    assert float(ready["value"][1]) == 1
    (up,) = prometheus_query(prometheus, 'up{job="heed"}')
    assert float(up["value"][1]) == 1

    rules = wait_until(lambda: evaluated_rules(prometheus), 30, what="alert rules evaluated")
    assert {rule["name"] for rule in rules} >= {"HeedHighErrorRatio", "HeedNotReady"}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert not [rule["name"] for rule in rules if rule["state"] != "inactive"]  # a healthy heed alerts nothing


def test_short_locust_run_has_no_failures(heed, tmp_path):
    stats = tmp_path / "heed"
    env = os.environ | {"LOADTEST_USERS": "4", "LOADTEST_RAMP": "4", "LOADTEST_DURATION": "15"}
    locust = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless"]
    result = subprocess.run(
        [*locust, "--host", heed, "--csv", str(stats), "--only-summary", "--stop-timeout", "10"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    with open(f"{stats}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    failures = {name: row["Failure Count"] for name, row in rows.items() if row["Failure Count"] != "0"}
    assert not failures, output
    assert result.returncode == 0, output
    for name in ("translate one", "translate list", "summarize long", "generate stream", "GET /v1/models"):
        assert int(rows[name]["Request Count"]) > 0, (name, output)
