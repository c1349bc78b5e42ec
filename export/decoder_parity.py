"""Check an exported decoder-only model directory against the PyTorch model it came from, as the
runtime drives the graph: a right-padded batch of prompts of different lengths prefilled in one
run (every prompt position's logits asked for), the prompts' K/V written at their positions in a
cache whose other slots hold garbage, then one token per step with every row at its own position.
Logits are compared with the uncached forward pass, each step's `top_k` outputs with the
reference's best tokens (exactly) and log-probabilities; the result is judged as
`export/parity.py` judges a seq2seq model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.decoder_model import DecoderOnlyModel
from export.parity import TOP_K, Parity, ParityError
from service import graph

GARBAGE = 1e3  # what unwritten cache slots hold: they must never be read


def compare_decoder_only(
    model: DecoderOnlyModel, directory: Path, prompts=(7, 3, 5), steps: int = 6, seed: int = 0
) -> Parity:
    g = torch.Generator().manual_seed(seed)
    spec, layers, rows = model.spec, len(model.layers), len(prompts)
    ids = torch.randint(0, spec.vocab_size, (rows, max(prompts) + steps), generator=g)
    with torch.no_grad():
        reference = model.eval()(ids).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(directory / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    ids_name, positions_name, index_name = graph.DECODER_ONLY_INPUTS
    top_k, with_logprobs = graph.CHOICE_INPUTS
    past_names, present_names = graph.past_inputs(layers), graph.present_outputs(layers)
    longest = max(prompts)
    cache = [np.full((rows, spec.kv_heads, longest + steps, spec.head_dim), GARBAGE, np.float32) for _ in past_names]
    positions = np.arange(longest)[None, :].repeat(rows, 0)
    feeds = {
        ids_name: ids[:, :longest].numpy(),
        positions_name: positions,
        index_name: positions,
        top_k: np.array([TOP_K], np.int64),
        with_logprobs: np.array([False]),
    } | {name: np.full_like(buffer[:, :, :longest], GARBAGE) for name, buffer in zip(past_names, cache)}
    logits, *prefilled = session.run([graph.LOGITS, *present_names], feeds)
    worst = max(float(np.abs(logits[b, :n] - reference[b, :n]).max()) for b, n in enumerate(prompts))
    for buffer, kv in zip(cache, prefilled):
        for b, n in enumerate(prompts):
            buffer[b, :, :n] = kv[b, :, :n]
    at = np.array(prompts)  # each row's next position
    for step in range(steps):
        rows_at = np.arange(rows)
        feeds = {
            ids_name: ids.numpy()[rows_at, at][:, None],
            positions_name: at[:, None],
            index_name: np.zeros((rows, 1), np.int64),
            top_k: np.array([TOP_K], np.int64),
            with_logprobs: np.array([step % 2 == 0]),  # odd steps: the logits again
        } | dict(zip(past_names, cache))
        logits, top_ids, top_logits, top_logprobs, *cache = session.run(
            [graph.LOGITS, *graph.TOP_OUTPUTS, *present_names], feeds
        )
        expected = reference[rows_at, at]
        best = np.argsort(-expected, axis=-1, kind="stable")[:, :TOP_K]
        if not np.array_equal(top_ids[:, 0], best):
            raise ParityError(f"step {step}: top_ids {top_ids[:, 0].tolist()} are not the best tokens {best.tolist()}")
        logprobs = torch.log_softmax(torch.from_numpy(expected), dim=-1).numpy() if step % 2 == 0 else expected
        worst = max(
            worst,
            float(np.abs(logits[:, 0] - expected).max()),
            float(np.abs(top_logits[:, 0] - np.take_along_axis(expected, best, -1)).max()),
            float(np.abs(top_logprobs[:, 0] - np.take_along_axis(logprobs, best, -1)).max()),
        )
        at = at + 1
    return Parity(worst, max(1.0, float(np.abs(reference).max())))
