"""Faults in a real `heed serve`: an ONNX Runtime failure injected into one decoder run (test-only
`HEED_FAULT_DECODER_RUN`, read at start) fails only the request in that step, with a 500 carrying
its request id, while the queued and later requests are served; corrupt or mismatched model
directories among good ones are not ready, say why in one log line, and the good model is served."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from tests.http_server import LONG_TOKENS, Server, running


def test_an_onnx_runtime_failure_fails_only_its_request(http_repo, tmp_path):
    env = {"HEED_KV_ROWS": "1", "HEED_FAULT_DECODER_RUN": "2000", "HEED_MAX_NEW_TOKENS": "8000"}
    with running(http_repo, tmp_path / "faults.log", **env) as server:
        doomed: dict = {}
        body = {"text": "hello", "min_new_tokens": LONG_TOKENS, "max_new_tokens": LONG_TOKENS}

        def send_doomed() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                doomed["response"] = c.post("/v1/translate", json=body, headers={"X-Request-ID": "doomed-1"})

        def send_queued() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                doomed["queued"] = c.post("/v1/translate", json={"text": "the lazy dog", "max_new_tokens": 5})

        first = threading.Thread(target=send_doomed)
        first.start()
        server.wait_for("heed_kv_slots_used", 1, model="tiny")
        second = threading.Thread(target=send_queued)
        second.start()
        server.wait_for("heed_queue_depth", 1, model="tiny")  # waits for the doomed request's row
        first.join(60)
        second.join(60)

        failed = doomed["response"]
        assert failed.status_code == 500, failed.text
        error = failed.json()["error"]
        assert error == {"type": "internal_error", "message": error["message"], "request_id": "doomed-1"}
        assert failed.headers["x-request-id"] == "doomed-1"
        queued = doomed["queued"]
        assert queued.status_code == 200, queued.text
        assert queued.json()["translations"][0]["output_tokens"] == 5
        for _ in range(3):
            assert server.client.post("/v1/translate", json={"text": "hello", "max_new_tokens": 3}).status_code == 200
        server.wait_for("heed_kv_slots_used", 0, model="tiny")
        assert server.sample("heed_requests_total", model="tiny", route="/v1/translate", status="500") == 1
        assert server.client.get("/readyz").status_code == 200
        log = server.log.read_text()
        assert "failing its running requests: doomed-1" in log
        assert "Unexpected input data type. Actual: (tensor(float))" in log  # raised by ONNX Runtime itself
        assert "request doomed-1 answered 500 internal_error" in log


def copy_model(repo, source: str, name: str):
    directory = shutil.copytree(repo / source, repo / name)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["name"] = name
    return directory, manifest


@pytest.fixture
def damaged_repo(http_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(http_repo / "tiny", repo / "tiny")
    corrupt, manifest = copy_model(repo, "tiny", "corrupt")  # bytes changed under their sha256
    (corrupt / "decoder.onnx").write_bytes(b"\x08\x07garbage" * 1000)
    (corrupt / "manifest.json").write_text(json.dumps(manifest))
    garbled, manifest = copy_model(repo, "tiny", "garbled")  # not ONNX at all, no hash to catch it
    (garbled / "encoder.onnx").write_bytes(b"not a protobuf")
    manifest["sha256"].pop("encoder.onnx")
    (garbled / "manifest.json").write_text(json.dumps(manifest))
    mismatched, manifest = copy_model(repo, "tiny", "mismatched")  # graphs of another architecture
    manifest["spec"]["decoder"]["layers"] += 1
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    return repo


def test_corrupt_and_mismatched_models_are_not_ready_and_the_others_are_served(damaged_repo, tmp_path):
    server = Server(damaged_repo, tmp_path / "damaged.log")
    try:
        end = time.monotonic() + 90
        while not (models := server_models(server)) or not models["tiny"]:
            assert server.process.poll() is None, server.log.read_text()
            assert time.monotonic() < end, server.log.read_text()
            time.sleep(0.2)
        assert models == {"tiny": True, "corrupt": False, "garbled": False, "mismatched": False}
        assert server.client.get("/readyz").status_code == 503  # not every model is ready
        r = server.client.post("/v1/translate", json={"model": "tiny", "text": "hello"})
        assert r.status_code == 200, r.text
        reasons = {
            "corrupt": "decoder.onnx does not match its sha256",
            "garbled": "encoder.onnx",
            "mismatched": "decoder graph does not match the manifest's 3 layers",
        }
        log = server.log.read_text()
        for name, reason in reasons.items():
            r = server.client.post("/v1/translate", json={"model": name, "text": "hello"})
            assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded", r.text
            assert f"model {name!r} is not ready" in r.json()["error"]["message"] and reason in r.text
            [line] = [line for line in log.splitlines() if f"model {name} failed to load" in line]
            assert str(damaged_repo / name) in line and reason in line and "not served" in line
    finally:
        assert server.stop() == 0


def server_models(server: Server) -> dict[str, bool] | None:
    try:
        return {m["name"]: m["ready"] for m in server.client.get("/v1/models").json()["models"]}
    except httpx.TransportError:
        return None
