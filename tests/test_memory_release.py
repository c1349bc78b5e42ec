"""A burst's memory goes back once the batch has stayed empty a moment (service/worker.py,
service/allocator.py): never between the requests of a steady client, once after its last."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service import worker
from service.http.app import create_app
from service.settings import Settings
from tests.deploy_helpers import wait_until

IDLE = 0.5


@pytest.fixture
def client(tiny_repo, monkeypatch):
    releases: list[float] = []
    monkeypatch.setattr(worker, "IDLE_BEFORE_RELEASE_S", IDLE)
    monkeypatch.setattr(worker, "release_free_memory", lambda: releases.append(time.monotonic()))
    app = create_app(Settings(model_repo=tiny_repo, intra_op_threads=1))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, what="models ready")
        yield client, releases


def test_memory_is_released_once_after_the_last_request_not_between_requests(client):
    client, releases = client
    assert releases == []  # loading and warming up hand nothing back
    for _ in range(6):
        answer = client.post("/v1/generate", json={"model": "tiny", "input": "one two three", "max_new_tokens": 4})
        assert answer.status_code == 200, answer.text
    last = time.monotonic()
    assert releases == []  # back-to-back requests: never idle for long
    wait_until(lambda: releases, 10, what="the release after the burst")
    assert releases[0] - last >= IDLE * 0.9
    time.sleep(IDLE * 2)
    assert len(releases) == 1  # idle on: nothing more to hand back
