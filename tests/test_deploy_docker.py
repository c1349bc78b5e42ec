"""The Dockerfiles: hadolint clean, and the properties the deployment relies on (no torch in the
image, the prepared default models copied in, non-root, a health check on /healthz). The CPU image
is also built and run: tests/test_deploy_container.py."""

from __future__ import annotations

import re

import pytest

from tests.deploy_helpers import DEPLOY, ROOT, run, tool

DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.gpu"]
LINTED = [*DOCKERFILES, DEPLOY / "prometheus" / "Dockerfile"]


def stages(path) -> dict[str, str]:
    """Instructions of each named stage (`FROM ... AS name`), continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.IGNORECASE)
        if head:
            current = head.group(1)
            found[current] = ""
        elif current and line.strip() and not line.lstrip().startswith("#"):
            found[current] += line.strip() + "\n"
    return found


@pytest.mark.parametrize("dockerfile", LINTED, ids=lambda p: p.parent.name + "/" + p.name)
def test_hadolint_reports_nothing(dockerfile):
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_as_invoked_does_catch_problems(tmp_path):
    """The lint above could pass by linting nothing: the same invocation must flag a bad file."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nUSER root\n")
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "info", str(bad))
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_serves_the_prepared_models_without_torch(dockerfile):
    found = stages(dockerfile)
    assert list(found) == ["runtime"]
    runtime = found["runtime"]
    installs = re.findall(r"pip install ([^\n&]*)", runtime)
    assert installs, "the image installs heed"
    for args in installs:  # the serving dependencies and the OTLP exporter, never the export extra
        assert "torch" not in args and "export" not in args and args.replace("[tracing]", "").count("[") == 0, args
    assert re.search(r"^COPY models /models$", runtime, re.MULTILINE)  # what `make models` prepared
    assert "COPY service ./service" in runtime and "COPY export" not in runtime and "export." not in runtime
    assert "HEED_MODEL_REPO=/models" in runtime
    assert 'ENTRYPOINT ["heed", "serve"]' in runtime


def test_cpu_image_base_is_python_slim_unless_given():
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim-\w+$", (DEPLOY / "docker" / "Dockerfile").read_text(), re.M)


def test_build_context_holds_only_what_the_images_copy():
    """.dockerignore admits the installed sources and the prepared models, nothing else."""
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {rule[1:] for rule in rules if rule.startswith("!")} == {"pyproject.toml", "README.md", "service", "models"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_runs_as_non_root_with_a_health_check(dockerfile):
    runtime = stages(dockerfile)["runtime"]
    users = re.findall(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"useradd [^\n]*--uid " + re.escape(users[-1]), runtime)
    healthcheck = re.search(r"^HEALTHCHECK .*", runtime, re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    assert "HEED_HOST=0.0.0.0" in runtime  # reachable from outside the container


def test_gpu_image_uses_cuda_and_onnxruntime_gpu():
    text = (DEPLOY / "docker" / "Dockerfile.gpu").read_text()
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-cudnn-runtime", text)
    runtime = stages(DEPLOY / "docker" / "Dockerfile.gpu")["runtime"]
    assert "pip uninstall -y onnxruntime" in runtime
    assert 'pip install --no-cache-dir "onnxruntime-gpu' in runtime
    assert "HEED_PROVIDER=cuda" in runtime
