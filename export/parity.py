"""Check an exported model directory against the PyTorch model it came from.

Runs the ONNX encoder, then the ONNX decoder one token at a time with a growing cache, and
once more with the whole target as one chunk of new tokens (as the alignment pass does), on a
padded batch of inputs of different lengths, and compares the logits with the PyTorch model's
teacher-forced, uncached forward pass, and each step's `top_k` outputs with the reference's best
tokens (exactly) and their log-probabilities. It covers the export and the cache protocol together.

The tolerance scales with the logits: float32 rounds relative to a value's magnitude, so a model
whose logits are in the thousands differs from itself by ~1e-3 between two correct graphs, while
an absolute bound that allows that would hide real errors in a model whose logits are near 1.
A graph passes when `max |delta| <= tolerance * max(1, max |reference logit|)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.model import Seq2SeqModel
from service import graph

TOP_K = 4
PARITY_TOLERANCE = 1e-4  # of max(1, the largest |logit|)


class ParityError(RuntimeError):
    """Exported graphs that do not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class Parity:
    """How far ONNX is from the reference: the largest absolute difference (logits and
    log-probabilities) and the scale it is judged against, max(1, the largest |reference logit|)."""

    absolute: float
    scale: float

    @classmethod
    def of(cls, ours: np.ndarray, reference: np.ndarray) -> Parity:
        return cls(float(np.abs(ours - reference).max()), max(1.0, float(np.abs(reference).max())))

    @property
    def relative(self) -> float:
        return self.absolute / self.scale

    def within(self, tolerance: float = PARITY_TOLERANCE) -> bool:
        return self.absolute <= tolerance * self.scale

    def require(self, what: str, tolerance: float = PARITY_TOLERANCE) -> None:
        """Raise a `ParityError` for `what` (a model directory) when not `within` the tolerance."""
        if not self.within(tolerance):
            raise ParityError(f"{what}: ONNX logits differ from PyTorch: {self} (allowed: {tolerance:.0e} relative)")

    def __str__(self) -> str:
        return f"max |delta| {self.absolute:.2e}, {self.relative:.2e} relative to the largest |logit| {self.scale:.3g}"


def random_batch(model: Seq2SeqModel, lengths: list[int], target_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vocab = model.spec.vocab_size
    ids = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    dec = torch.randint(3, vocab, (len(lengths), target_len), generator=g)
    return ids, mask, dec


def compare(model: Seq2SeqModel, directory: Path, lengths=(7, 3, 5), target_len: int = 6, seed: int = 0) -> Parity:
    ids, mask, dec = random_batch(model, list(lengths), target_len, seed)
    with torch.no_grad():
        reference = model.eval()(ids, mask, dec).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    enc = ort.InferenceSession(str(directory / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(directory / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    layers = len(model.decoder_layers)
    cross = enc.run(graph.encoder_outputs(layers), dict(zip(graph.ENCODER_INPUTS, (ids.numpy(), mask.numpy()))))
    top_k, with_logprobs = graph.CHOICE_INPUTS
    input_ids, positions, source_mask = graph.DECODER_INPUTS
    spec = model.spec
    # Unwritten slots hold garbage: the cache must never be read where it was not written.
    cache = [
        np.full((len(lengths), spec.kv_heads, target_len, spec.head_dim), 1e3, np.float32) for _ in range(2 * layers)
    ]
    scale = max(1.0, float(np.abs(reference).max()))
    worst = 0.0
    for t in range(target_len):
        feeds = {
            input_ids: dec[:, t : t + 1].numpy(),
            positions: np.full((len(lengths), 1), t, np.int64),
            source_mask: mask.numpy(),
            top_k: np.array([TOP_K], np.int64),
            with_logprobs: np.array([t % 2 == 0]),  # odd steps: the logits again, checked below
        }
        feeds |= dict(zip(graph.cache_inputs(layers), [*cache, *cross]))
        logits, top_ids, top_logits, top_logprobs, *cache = decoder.run(
            [graph.LOGITS, *graph.TOP_OUTPUTS, *graph.present_outputs(layers)], feeds
        )
        top_ids, top_logits, top_logprobs = top_ids[:, 0], top_logits[:, 0], top_logprobs[:, 0]
        expected = reference[:, t]
        best = np.argsort(-expected, axis=-1, kind="stable")[:, :TOP_K]
        if not np.array_equal(top_ids, best):
            raise ParityError(f"step {t}: top_ids {top_ids.tolist()} are not the best tokens {best.tolist()}")
        logprobs = torch.log_softmax(torch.from_numpy(expected), dim=-1).numpy() if t % 2 == 0 else expected
        worst = max(
            worst,
            float(np.abs(logits[:, 0] - expected).max()),
            float(np.abs(top_logits - np.take_along_axis(expected, best, -1)).max()),
            float(np.abs(top_logprobs - np.take_along_axis(logprobs, best, -1)).max()),
        )
    feeds[input_ids] = dec.numpy()
    feeds[positions] = np.arange(target_len)[None, :].repeat(len(lengths), 0)
    garbage = np.full_like(cache[0], 1e3)
    feeds |= dict.fromkeys(graph.past_inputs(layers), garbage)  # a fresh cache for the whole target
    logits = decoder.run([graph.LOGITS], feeds)[0]
    return Parity(max(worst, float(np.abs(logits - reference).max())), scale)
