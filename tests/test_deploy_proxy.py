"""What runs in front of heed (docs/reliability.md): the nginx configuration `deploy/nginx/heed.conf`,
checked by `nginx -t` (Debian's nginx, `make nginx`), and the ingress-nginx Ingress of
`deploy/k8s/ingress`, rendered and validated against the Kubernetes schemas; both agree with
heed's own settings (body size, timeouts, keep-alive) and with the base Service."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import kubernetes_validate
import pytest

from service.settings import Settings
from tests.deploy_helpers import DEPLOY, run, tool
from tests.test_deploy_k8s import KUBERNETES_VERSION, render

NGINX_CONF = DEPLOY / "nginx" / "heed.conf"
UNITS = {"": 1, "s": 1, "k": 1024, "m": 1024**2}


def nginx() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if Path(found).is_file() else tool("nginx")


def directive(name: str, text: str = NGINX_CONF.read_text()) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, re.MULTILINE)


def number(value: str) -> float:
    digits, unit = re.fullmatch(r"(\d+)([a-z]?)", value.strip()).groups()
    return int(digits) * UNITS[unit]


def test_nginx_accepts_the_configuration(tmp_path):
    main = f"""
daemon off;
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {NGINX_CONF};
}}
"""
    (tmp_path / "nginx.conf").write_text(main)
    result = run(nginx(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"))
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(NGINX_CONF.read_text().replace("client_header_timeout", "client_header_timout"))
    (tmp_path / "nginx.conf").write_text(main.replace(str(NGINX_CONF), str(broken)))
    assert run(nginx(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")).returncode != 0


def test_nginx_bounds_slow_clients_and_agrees_with_heeds_settings():
    heed = Settings()
    assert [number(v) for v in directive("client_max_body_size")] == [heed.max_body_bytes]
    assert number(directive("client_header_timeout")[0]) <= heed.read_timeout
    assert number(directive("client_body_timeout")[0]) <= heed.read_timeout
    assert number(directive("proxy_read_timeout")[0]) > heed.request_timeout  # heed's 504 comes first
    upstream_keepalive = number(directive("keepalive_timeout")[0])  # the first: in the upstream block
    assert upstream_keepalive < heed.keep_alive  # nginx closes idle upstream connections before heed does
    assert directive("limit_conn") and directive("limit_req") and directive("proxy_buffering") == ["off"]
    retried = directive("proxy_next_upstream")[0].split()
    assert "http_503" in retried and "timeout" not in retried  # a timed-out POST may still be decoding


def test_the_ingress_validates_routes_to_the_service_and_agrees_with_heeds_settings():
    (ingress,) = render("ingress")
    kubernetes_validate.validate(ingress, KUBERNETES_VERSION, strict=True)
    (service,) = [d for d in render("base") if d["kind"] == "Service"]
    assert ingress["metadata"]["namespace"] == service["metadata"]["namespace"]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    notes = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in ingress["metadata"]["annotations"].items()}
    heed = Settings()
    assert number(notes["proxy-body-size"]) == heed.max_body_bytes
    assert number(notes["proxy-read-timeout"]) > heed.request_timeout
    assert notes["proxy-buffering"] == "off" and notes["proxy-request-buffering"] == "on"
    assert int(notes["limit-connections"]) > 0 and int(notes["limit-rps"]) > 0
    comments = (DEPLOY / "k8s" / "ingress" / "kustomization.yaml").read_text()
    assert "client-header-timeout" in comments and "client-body-timeout" in comments


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_the_deployment_sets_heeds_connection_bounds(overlay):
    (config,) = [d for d in render(overlay) if d["kind"] == "ConfigMap"]
    settings = Settings(**{k.removeprefix("HEED_").lower(): v for k, v in config["data"].items()})
    assert settings.max_connections == int(config["data"]["HEED_MAX_CONNECTIONS"])
    assert settings.read_timeout == float(config["data"]["HEED_READ_TIMEOUT"])
