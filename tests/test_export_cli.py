"""`heed export` builds a servable model directory from a config, a tokenizer and weights."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import save_model

from export.demo import build_model, spec, tokenizer
from service.engine import Engine


def test_export_cli_with_weights_serves_the_same_model(tmp_path):
    model_spec = spec(n_kv_heads=2)
    model = build_model(model_spec, seed=5)
    weights = tmp_path / "model.safetensors"
    save_model(model, str(weights))
    tokenizer().save(str(tmp_path / "tokenizer.json"))
    config = {
        "name": "cli-model",
        "task": "summarize",
        "spec": model_spec.model_dump(),
        "special_tokens": {"pad_id": 0, "eos_id": 1, "decoder_start_id": 0},
        "generation": {"max_new_tokens": 6, "bad_words_ids": [[0]]},
    }
    (tmp_path / "model.json").write_text(json.dumps(config))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "export",
            "--config",
            str(tmp_path / "model.json"),
            "--tokenizer",
            str(tmp_path / "tokenizer.json"),
            "--weights",
            str(weights),
            "--out-repo",
            str(tmp_path / "repo"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "exported cli-model" in out.stdout
    engine = Engine(tmp_path / "repo" / "cli-model")
    assert engine.manifest.task == "summarize" and engine.manifest.generation.max_new_tokens == 6
    ids = engine.prepare(["hello world"])[0].input_ids
    result = engine.generate(["hello world"])[0]
    with torch.no_grad():  # first token equals the PyTorch model's greedy choice
        logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([[0]]))[0, -1]
        logits[0] = -float("inf")
    assert result.token_ids[0] == int(logits.argmax())
