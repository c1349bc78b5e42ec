"""docker-compose.yml: valid against the Compose Specification schema (vendored, offline), and
wired together: the files it mounts exist, Prometheus scrapes the heed service on its port,
Grafana's datasource points at the Prometheus service and its dashboards are where it mounts them.
The test profile (host network) is also run for real: tests/test_deploy_stack.py."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from tests.deploy_helpers import DEPLOY, ROOT

SCHEMA = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def errors(document: dict) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid(compose):
    assert errors(compose) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["heed"].update(restart_policy="always"),  # not a Compose key
        lambda c: c["services"]["heed"]["healthcheck"].update(interval=10),  # durations are strings
        lambda c: c["services"]["prometheus"].update(depends_on={"heed": {"condition": "healthy"}}),
    ],
    ids=["unknown-key", "wrong-type", "bad-enum"],
)
def test_schema_rejects_broken_variants(compose, mutate):
    """The validation is not vacuous: the schema is strict enough to catch these."""
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert errors(broken)


def test_services_and_their_mounts(compose):
    services = {name: s for name, s in compose["services"].items() if "profiles" not in s}
    assert set(services) == {"heed", "prometheus", "grafana"}
    assert services["heed"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (ROOT / services["heed"]["build"]["dockerfile"]).is_file()
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        assert ":latest" not in services[name]["image"] and ":" in services[name]["image"]


@pytest.mark.parametrize("service", ["heed", "heed-loopback"])
def test_heed_container_is_locked_down(compose, service):
    heed = compose["services"][service]
    assert heed["read_only"] is True and "/tmp" in heed["tmpfs"]
    assert heed["cap_drop"] == ["ALL"]
    assert "/readyz" in " ".join(heed["healthcheck"]["test"]) and "HEED_PORT" in heed["healthcheck"]["test"][-1]


def test_default_heed_listens_on_every_interface(compose):
    assert compose["services"]["heed"]["environment"]["HEED_HOST"] == "0.0.0.0"


def test_test_profile_is_heed_and_prometheus_on_the_host_network(compose):
    profiled = {name: s for name, s in compose["services"].items() if "profiles" in s}
    assert set(profiled) == {"heed-loopback", "prometheus-loopback"}
    for name, service in profiled.items():
        assert service["profiles"] == ["test"] and service["network_mode"] == "host", name
        assert "ports" not in service and "build" not in service, name  # images come from `make image*`
    heed = profiled["heed-loopback"]
    assert heed["environment"]["HEED_HOST"] == "127.0.0.1"  # loopback only
    assert heed["image"] == compose["services"]["heed"]["image"].join(["${HEED_IMAGE:-", "}"])
    prometheus = profiled["prometheus-loopback"]
    assert prometheus["image"] == "${PROMETHEUS_IMAGE:-heed-prometheus:debian}"
    start = prometheus["command"][0]
    heed_port = heed["environment"]["HEED_PORT"]
    assert f"s/heed:8000/127.0.0.1:{heed_port}/" in start and "exec prometheus" in start
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts == {
        "/etc/prometheus/prometheus.yml": "./deploy/prometheus/prometheus.yml",
        "/etc/prometheus/heed-alerts.yml": "./deploy/prometheus/heed-alerts.yml",
    }


def test_prometheus_scrapes_heed_and_loads_the_rules(compose):
    heed_port = compose["services"]["heed"]["environment"]["HEED_PORT"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["heed"]["static_configs"][0]["targets"] == [f"heed:{heed_port}"]
    assert jobs["heed"]["metrics_path"] == "/metrics"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]}
    for rule_file in config["rule_files"]:  # relative to the config file's directory in the container
        assert mounts[f"/etc/prometheus/{rule_file}"] == f"./deploy/prometheus/{rule_file}"


def test_grafana_provisioning_matches_the_stack(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]
    providers = yaml.safe_load((provisioning / "dashboards" / "heed.yml").read_text())["providers"]
    dashboards_dir = providers[0]["options"]["path"]
    assert (ROOT / mounts[dashboards_dir] / "heed.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/heed.json"
