"""heed's CPU image as `make image` builds it (deploy/docker/Dockerfile on the base it finds or
builds from Debian's packages), run as CI runs it (`docker run --network host`, locked down as
docker-compose.yml runs it): it serves the README's examples with their documented answers from
the default models, drains on SIGTERM and exits 0, holds no torch (but the OTLP exporter), and
runs as uid 10001."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.server import free_port
from tests.deploy_helpers import container, docker, get, make, post_json, run, wait_ready, wait_until
from tests.test_default_models import readme_examples

IMAGE = "heed:test"
LOCKED_DOWN = ("--read-only", "--tmpfs=/tmp", "--cap-drop=ALL", "--security-opt=no-new-privileges:true")


@pytest.fixture(scope="module")
def image() -> str:
    make("image", HEED_IMAGE=IMAGE)
    return IMAGE


def serve(image: str, **env: str):
    """The image serving on a free loopback port: (container name, URL) once ready."""
    port = free_port()
    settings = {"HEED_HOST": "127.0.0.1", "HEED_PORT": str(port), "HEED_INTRA_OP_THREADS": "1"} | env
    return container(image, *LOCKED_DOWN, **settings), f"http://127.0.0.1:{port}"


def test_image_holds_no_torch_and_runs_as_uid_10001(image):
    assert docker("image", "inspect", "--format={{.Config.User}}", image) == "10001"
    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'export') if u.find_spec(m)])"
    found = docker("run", "--rm", "--network=host", "--entrypoint=python", "--workdir=/", image, "-c", probe)
    assert found.splitlines()[-1] == "[]"
    installed = docker("run", "--rm", "--network=host", "--entrypoint=pip", image, "list", "--format=freeze")
    assert "onnxruntime==" in installed and "torch" not in installed.lower()
    assert "opentelemetry-exporter-otlp-proto-http==" in installed  # HEED_OTLP_ENDPOINT works in the image


def test_serves_the_readme_examples_as_a_non_root_process_logging_json(image):
    examples = readme_examples()
    assert {route for route, *_ in examples} == {"/v1/translate", "/v1/summarize"}
    handle, url = serve(image, HEED_LOG_FORMAT="json")
    with handle as name:
        wait_ready(name, url)
        status = docker("exec", name, "cat", "/proc/1/status")
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uids) == {"10001"}  # real, effective, saved and filesystem uid of the server
        for route, body, model, texts in examples:
            code, payload = post_json(url + route, json.dumps(body).encode())
            assert code == 200, payload[:500]
            answer = json.loads(payload)
            outputs = answer["translations"] if route == "/v1/translate" else answer["summaries"]
            assert (answer["model"], [o["text"] for o in outputs]) == (model, texts)
        logs = run("docker", "logs", name)
        lines = (logs.stdout + logs.stderr).splitlines()
        entries = [json.loads(line) for line in lines]  # every line of the container's log is JSON
        served = [e for e in entries if e["logger"] == "heed.access" and e["path"].startswith("/v1/")]
        assert [(e["route"], e["status"]) for e in served] == [(route, 200) for route, *_ in examples]


def test_sigterm_drains_admitted_requests_and_exits_0(image):
    """One KV row and four requests of 16 forced-length texts (about 5 s of decoding): the first
    decodes, the others wait for the row when the signal comes, and every one is answered in full."""
    handle, url = serve(image, HEED_KV_ROWS="1", HEED_SHUTDOWN_GRACE="120")
    texts, tokens = ["one hundred and twenty-three"] * 16, 48
    body = json.dumps({"text": texts, "target_lang": "de", "min_new_tokens": tokens, "max_new_tokens": tokens})
    with handle as name, ThreadPoolExecutor(4) as pool:
        wait_ready(name, url)
        answers = [pool.submit(post_json, url + "/v1/translate", body.encode(), 300) for _ in range(4)]
        wait_until(lambda: queued(url) >= 3, 30, 0.05, what="three requests waiting for the row")
        docker("kill", "--signal=TERM", name)
        wait_until(lambda: get(url + "/readyz")[0] == 503, 10, 0.05, what="readiness off after SIGTERM")
        assert json.loads(get(url + "/readyz")[1])["status"] == "draining"
        code, refused = post_json(url + "/v1/translate", json.dumps({"text": "seven"}).encode())
        assert code == 503 and json.loads(refused)["error"]["type"] == "overloaded"
        assert not all(a.done() for a in answers), "every request ended before the refusal was tested"
        results = [a.result(timeout=300) for a in answers]
        assert [code for code, _ in results] == [200] * 4
        for _, payload in results:
            assert [t["output_tokens"] for t in json.loads(payload)["translations"]] == [tokens] * 16
        assert docker("wait", name, timeout=120) == "0"
        logs = run("docker", "logs", name)
        assert "signal 15: draining" in logs.stdout + logs.stderr


def queued(url: str) -> float:
    """heed_queue_depth of heed-numbers, from the container's /metrics."""
    families = text_string_to_metric_families(get(url + "/metrics")[1].decode())
    depths = {s.labels["model"]: s.value for f in families if f.name == "heed_queue_depth" for s in f.samples}
    return depths["heed-numbers"]
