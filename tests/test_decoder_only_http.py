"""A seq2seq model and a decoder-only model served by one `heed serve`: requests to both at once
all succeed, and each answer is the output its input gets decoded alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from export.cli import main as export_main
from export.demo import build_model_dir
from service.engine import Engine
from service.settings import EngineConfig
from tests import hf_builders
from tests.http_server import running, sse_events

pytest.importorskip("transformers")

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "one two", "how are you today?"]
PROMPTS = hf_builders.prompts(8)
OPTIONS = {"max_new_tokens": 12}


@pytest.fixture(scope="module")
def mixed_repo(tmp_path_factory):
    """`tiny` (heed's seq2seq translation model) and `qwen` (a Qwen2 checkpoint, decoder-only)."""
    repo = tmp_path_factory.mktemp("mixed-repo")
    build_model_dir(repo, "tiny")
    hf_dir = hf_builders.qwen2(tmp_path_factory.mktemp("qwen-hf") / "hf")
    assert export_main(["--from-hf", str(hf_dir), "--name", "qwen", "--task", "generate", "--out-repo", str(repo)]) == 0
    return repo


def alone(directory, texts: list[str]) -> list[dict]:
    engine = Engine(directory, EngineConfig(kv_rows=4, intra_op_threads=1))
    return [{"text": g.text, "token_ids": g.token_ids} for g in (engine.generate([t], OPTIONS)[0] for t in texts)]


def batched_steps(server, model: str, more_than: int) -> float:
    """How many of the model's decoder steps ran more than `more_than` rows (a bucket bound of
    `heed_decode_batch_size`), from the histogram's count and cumulative buckets."""
    metrics = server.metrics()
    steps = metrics[("heed_decode_batch_size_count", frozenset({("model", model)}))]
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in metrics.items()
        if name == "heed_decode_batch_size_bucket" and ("model", model) in labels
    }
    return steps - buckets[float(more_than)]


def test_seq2seq_and_decoder_only_models_side_by_side(mixed_repo, tmp_path):
    expected = {"tiny": alone(mixed_repo / "tiny", TEXTS), "qwen": alone(mixed_repo / "qwen", PROMPTS)}
    assert len({len(e["token_ids"]) for e in expected["qwen"]}) > 2  # continuations of varied lengths
    with running(mixed_repo, tmp_path / "server.log") as server:
        models = {m["name"]: m for m in server.client.get("/v1/models").json()["models"]}
        assert models["qwen"]["task"] == "generate" and models["qwen"]["attention"]["encoder"] is None
        assert models["qwen"]["attention"]["kv_heads"] == 1 and models["tiny"]["dimensions"]["encoder_layers"] == 2

        def generate(job: tuple[str, str | list[str]]) -> tuple[int, dict]:
            model, text = job
            with httpx.Client(base_url=server.url, timeout=60) as client:
                r = client.post("/v1/generate", json={"model": model, "input": text, **OPTIONS})
            return r.status_code, r.json()

        jobs: list[tuple[str, str | list[str]]] = [("qwen", p) for p in PROMPTS] + [("tiny", t) for t in TEXTS]
        jobs = [jobs[i] for i in range(0, len(jobs), 2)] + [jobs[i] for i in range(1, len(jobs), 2)]  # interleaved
        # each single input twice, and each model's inputs in one request, whose sequences are all
        # admitted together: 26 requests in flight together
        jobs = jobs * 2 + [("qwen", PROMPTS), ("tiny", TEXTS)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(generate, jobs))
        assert [status for status, _ in answers] == [200] * len(answers)
        want = {(m, t): e for m in expected for t, e in zip(TEXTS if m == "tiny" else PROMPTS, expected[m])}
        for (model, text), (_, body) in zip(jobs, answers):
            texts = [text] if isinstance(text, str) else text
            got = [{k: g[k] for k in ("text", "token_ids")} for g in body["generations"]]
            assert got == [want[model, t] for t in texts], (model, text)
            assert body["model"] == model
        for model, inputs in (("qwen", PROMPTS), ("tiny", TEXTS)):
            # the decoder step right after the many-input request's admission ran all its rows
            assert batched_steps(server, model, more_than=len(inputs) // 2) >= 1, model

        # the continuation only, streamed as it is answered whole
        body = {"model": "qwen", "input": PROMPTS[3], "stream": True, **OPTIONS}
        with server.client.stream("POST", "/v1/generate", json=body) as r:
            events = list(sse_events(r))
        streamed = "".join(e["token"]["text"] for name, e in events if name == "message" and "token" in e)
        assert events[-1][1]["done"] and events[-1][1]["text"] == streamed == expected["qwen"][3]["text"]
        assert not streamed.startswith(PROMPTS[3])
