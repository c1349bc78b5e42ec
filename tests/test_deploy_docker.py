"""The Dockerfiles: hadolint clean, and the properties the deployment relies on (no torch in the
runtime image, models built in the builder, non-root, a health check on /healthz)."""

from __future__ import annotations

import re

import pytest

from tests.deploy_helpers import DEPLOY, run, tool

DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.gpu"]


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
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
def test_models_are_built_with_torch_and_served_without(dockerfile):
    found = stages(dockerfile)
    assert list(found) == ["builder", "runtime"]
    builder, runtime = found["builder"], found["runtime"]
    assert re.search(r"pip install [^\n]*torch==", builder)
    assert re.search(r'pip install [^\n]*"\./\[export\]"', builder)
    assert "python -m export.demo --out-repo /models" in builder
    installs = re.findall(r"pip install ([^\n&]*)", runtime)
    assert installs, "the runtime stage installs heed"
    for args in installs:
        assert "torch" not in args and "export" not in args and "[" not in args, args
    assert re.search(r"COPY --from=builder\b[^\n]* /models /models", runtime)
    assert "COPY service ./service" in runtime and "COPY export" not in runtime
    assert "HEED_MODEL_REPO=/models" in runtime
    assert 'ENTRYPOINT ["heed", "serve"]' in runtime


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
