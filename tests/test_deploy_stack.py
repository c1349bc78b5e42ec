"""docker-compose.yml's test profile, up for real: heed's image and Prometheus from Debian's
package (both built by make on the same base), on the host's network, Prometheus with the stack's
own configuration and alert rules. Prometheus scrapes heed (`up == 1`, a request counted in
`heed_requests_total`) and evaluates every rule."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from loadtests.server import free_port
from tests.deploy_helpers import (
    ROOT,
    docker,
    evaluated_rules,
    get,
    make,
    post_json,
    prometheus_query,
    wait_ready,
    wait_until,
)

SERVICES = ("heed-loopback", "prometheus-loopback")
IMAGES = {"HEED_IMAGE": "heed:test", "PROMETHEUS_IMAGE": "heed-prometheus:test"}


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """The profile's services up (`docker-compose --profile test up`), then down with their volumes;
    yields the URLs of heed and Prometheus and each service's container."""
    make("image", "image-prometheus", "docker-compose", **IMAGES)
    heed_port, prometheus_port = free_port(), free_port()
    env = os.environ | IMAGES
    env |= {
        "HEED_LOOPBACK_PORT": str(heed_port),
        "PROMETHEUS_LOOPBACK_PORT": str(prometheus_port),
        "PROMETHEUS_LOOPBACK_INTERVAL": "1s",
    }
    compose = ["docker-compose", "--project-name", f"heed-test-{uuid.uuid4().hex[:8]}", "--profile", "test"]

    def call(*args: str) -> str:
        result = run_env(env, *compose, *args)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    call("up", "--detach", "--no-build", *SERVICES)
    try:
        containers = {service: call("ps", "--quiet", service).strip() for service in SERVICES}
        yield {
            "heed": f"http://127.0.0.1:{heed_port}",
            "prometheus": f"http://127.0.0.1:{prometheus_port}",
        } | containers
    finally:
        logs = run_env(env, *compose, "logs", "--no-color")
        print(logs.stdout[-5000:])  # shown by pytest when a test failed
        run_env(env, *compose, "down", "--volumes", "--timeout", "30")


def run_env(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_stack_runs_on_the_host_network_only(stack):
    for service in SERVICES:
        assert docker("inspect", "--format={{.HostConfig.NetworkMode}}", stack[service]) == "host", service


def test_prometheus_scrapes_heed_and_evaluates_the_rules(stack):
    heed, prometheus = stack["heed"], stack["prometheus"]
    wait_ready(stack["heed-loopback"], heed)
    wait_until(lambda: ready(prometheus), 60, what="prometheus ready")
    up = wait_until(lambda: prometheus_query(prometheus, 'up{job="heed"}'), 30, what="heed scraped")
    assert [float(series["value"][1]) for series in up] == [1.0]

    body = {"text": "one hundred and twenty-three", "target_lang": "fr"}
    status, payload = post_json(heed + "/v1/translate", json.dumps(body).encode())
    assert status == 200, payload[:300]
    served = 'heed_requests_total{job="heed", route="/v1/translate", status="200", model="heed-numbers"}'
    counted = wait_until(lambda: prometheus_query(prometheus, served), 30, what="heed_requests_total in Prometheus")
    assert sum(float(series["value"][1]) for series in counted) >= 1

    rules = wait_until(lambda: evaluated_rules(prometheus), 30, what="alert rules evaluated")
    assert {rule["name"] for rule in rules} >= {"HeedHighErrorRatio", "HeedNotReady", "HeedDown"}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert not [rule["name"] for rule in rules if rule["state"] != "inactive"]  # a healthy heed alerts nothing


def ready(prometheus: str) -> bool:
    try:
        return get(prometheus + "/-/ready", timeout=2)[0] == 200
    except OSError:
        return False
