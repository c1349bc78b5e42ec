"""The model runner: ONNX Runtime sessions for one model directory, and nothing else.

It knows graph input/output names and execution providers; batching, caching and decoding are
the engine's. CUDA is used when configured (or `auto`) and onnxruntime-gpu provides it; otherwise
heed falls back to the CPU and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import ModelLoadError
from service.manifest import Manifest

log = logging.getLogger("heed.runner")


def select_providers(requested: str, available: list[str]) -> list[str]:
    """ORT providers for a setting of `auto`, `cpu` or `cuda`, given what this ORT build has."""
    if requested in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if requested == "cuda":
        log.warning("provider 'cuda' requested but onnxruntime has no CUDAExecutionProvider; using CPU")
    return ["CPUExecutionProvider"]


def session_options(threads: int, spinning: bool = False) -> ort.SessionOptions:
    """`spinning` off: idle intra-op threads sleep instead of busy-waiting, leaving the cores to
    the event loop and the scheduler between (and during) decoder steps."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class ModelRunner:
    def __init__(
        self, directory: Path, manifest: Manifest, provider: str = "auto", threads: int = 0, spinning: bool = False
    ):
        self.providers = select_providers(provider, ort.get_available_providers())
        options = session_options(threads, spinning)
        self.encoder = ort.InferenceSession(str(directory / manifest.files.encoder), options, providers=self.providers)
        self.decoder = ort.InferenceSession(str(directory / manifest.files.decoder), options, providers=self.providers)
        layers = manifest.spec.decoder.layers
        names = [i.name for i in self.decoder.get_inputs()]
        self.cache_inputs = names[3:]  # past_* for every layer, then cross_*
        self.step_outputs = [o.name for o in self.decoder.get_outputs() if o.name != "cross_attention"]
        if len(self.cache_inputs) != 4 * layers:
            raise ModelLoadError(
                f"{directory}: decoder graph has {len(self.cache_inputs)} cache inputs, expected {4 * layers}"
            )

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """-> cross K, V per decoder layer, `[B, Hkv, S, D]` each."""
        return self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})

    def decode(
        self, input_ids: np.ndarray, positions: np.ndarray, source_mask: np.ndarray, cache: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """-> logits `[B, T, V]` and the new tokens' K, V per layer `[B, Hkv, T, D]`."""
        logits, *new = self.decoder.run(
            self.step_outputs, {"input_ids": input_ids, "positions": positions, "source_mask": source_mask, **cache}
        )
        return logits, new

    def cross_attention(
        self, input_ids: np.ndarray, positions: np.ndarray, source_mask: np.ndarray, cache: dict[str, np.ndarray]
    ) -> np.ndarray:
        """-> each decoder layer's cross-attention weights, mean over heads, `[B, L, T, S]`."""
        (weights,) = self.decoder.run(
            ["cross_attention"],
            {"input_ids": input_ids, "positions": positions, "source_mask": source_mask, **cache},
        )
        return weights
