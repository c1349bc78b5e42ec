"""The model runner: ONNX Runtime sessions for one model directory, and nothing else.

It knows graph input/output names and execution providers; batching, caching and decoding are
the engine's. CUDA is used when configured (or `auto`) and onnxruntime-gpu provides it; otherwise
heed falls back to the CPU and says so.
"""

from __future__ import annotations

import logging
import math
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import cpu, graph
from service.cpu import Int8Kernels
from service.errors import ModelLoadError
from service.manifest import Manifest, ModelFiles

log = logging.getLogger("heed.runner")


def select_providers(requested: str, available: list[str]) -> list[str]:
    """ORT providers for a setting of `auto`, `cpu` or `cuda`, given what this ORT build has."""
    if requested in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if requested == "cuda":
        log.warning("provider 'cuda' requested but onnxruntime has no CUDAExecutionProvider; using CPU")
    return ["CPUExecutionProvider"]


# ONNX Runtime's own rewrite of signed int8 weights to unsigned at session creation (its
# Avx2WeightS8ToU8Transformer: w + 128, zero point + 128, for DynamicQuantizeMatMul, MatMulInteger,
# ...). ORT applies it on every x86 CPU with AVX2, VNNI or not, so heed sets it only where the CPU
# lacks VNNI (service/cpu.py); elsewhere the option is compiled out. Unsigned weights are untouched.
UNSIGNED_INT8_OPTION = "session.x64quantprecision"

# Flush-to-zero and denormals-are-zero on ONNX Runtime's intra-op threads and, once per process,
# on the thread that creates the first session (the first model's worker thread). A softmax over
# the vocabulary underflows to denormals where the logits spread wider than about 87, and x86 CPUs
# handle those in microcode: 128 rows of 58101 such logits took 17 ms to log-softmax, 3.4 without.
# x86 only: elsewhere ONNX Runtime leaves the flags alone.
DENORMALS_AS_ZERO_OPTION = "session.set_denormal_as_zero"


def session_options(threads: int, spinning: bool = False, int8_kernels: Int8Kernels = "signed") -> ort.SessionOptions:
    """`spinning` off: idle intra-op threads sleep instead of busy-waiting, leaving the cores to
    the event loop and the scheduler between (and during) decoder steps. `int8_kernels`
    "unsigned": signed int8 weights become unsigned when a graph loads (exact U8U8 kernels, for x86
    CPUs without VNNI, where U8S8 saturates); "signed" keeps them as the graph holds them.

    No CPU memory arena: ONNX Runtime's arena keeps the largest burst's activations for the life
    of the session (a batch of 64 left about 190 MiB held on the int8 reference model); without it
    they go back to the C allocator, which the worker has return them after a burst
    (service/allocator.py), at no measurable cost per step (docs/performance.md)."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry(DENORMALS_AS_ZERO_OPTION, "1")
    if int8_kernels == "unsigned":
        options.add_session_config_entry(UNSIGNED_INT8_OPTION, "1")
    return options


def describe_int8_kernels(kernels: Int8Kernels, setting: str) -> str:
    """One log line's worth: which int8 kernels, and why."""
    if setting != "auto":
        why = f"int8_kernels={setting}"
    else:
        found = sorted((cpu.cpu_flags() or frozenset()) & cpu.VNNI_FLAGS)
        why = f"CPU has {', '.join(found)}" if found else "CPU has no VNNI/AMX int8 instructions"
    if kernels == "signed":
        return f"int8 kernels: signed weights as exported (U8S8; {why})"
    return f"int8 kernels: signed weights made unsigned at load (exact U8U8; {why})"


def shared_initializers(directory: Path, files: ModelFiles) -> dict[str, ort.OrtValue]:
    """The tensors that several graphs read (the vocabulary matrix: the encoder's and the
    decoder's embedding, the decoder's output projection) over one read-only map of the weights
    file, handed to every session: each session would otherwise hold its own copy of them."""
    if not files.shared:
        return {}
    with (directory / files.weights).open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return {
        name: ort.OrtValue.ortvalue_from_numpy(
            np.frombuffer(mapped, dtype=t.dtype, count=math.prod(t.shape), offset=t.offset).reshape(t.shape)
        )
        for name, t in files.shared.items()
    }


@dataclass
class DecoderStep:
    """One decoder run: the new tokens' K/V, and the last position's scores, either the whole
    vocabulary's `logits` `[B, V]` or the K best tokens `top_ids`, `top_logits`, `top_logprobs` `[B, K]`."""

    new_kv: list[np.ndarray]
    logits: np.ndarray | None = None
    top_ids: np.ndarray | None = None
    top_logits: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None


class ModelRunner:
    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        provider: str = "auto",
        threads: int = 0,
        spinning: bool = False,
        int8_kernels: str = "auto",
    ):
        self.providers = select_providers(provider, ort.get_available_providers())
        # chosen here, from the CPU this process runs on, not when the model was exported
        self.int8_kernels = cpu.choose_int8_kernels(int8_kernels)
        if manifest.quantization == "int8":
            log.info("%s: %s", manifest.name, describe_int8_kernels(self.int8_kernels, int8_kernels))
        options = session_options(threads, spinning, self.int8_kernels)
        files, decoder_only = manifest.files, manifest.spec.decoder_only
        self._shared = shared_initializers(directory, files)  # alive as long as the sessions
        for name, value in self._shared.items():
            options.add_initializer(name, value)
        self.encoder = (
            None
            if files.encoder is None
            else ort.InferenceSession(str(directory / files.encoder), options, providers=self.providers)
        )
        self.decoder = ort.InferenceSession(str(directory / files.decoder), options, providers=self.providers)
        layers = manifest.spec.decoder.layers
        self.vocab_size = manifest.spec.vocab_size
        self.cross_outputs = graph.encoder_outputs(layers)
        self.step_inputs = graph.step_inputs(decoder_only)
        self.cache_inputs = graph.cache_inputs(layers, decoder_only)
        self.new_kv_outputs = graph.new_kv_outputs(layers)
        names = {i.name for i in self.decoder.get_inputs()}
        missing = [n for n in (*self.step_inputs, *self.cache_inputs) if n not in names]
        if missing:
            raise ModelLoadError(
                f"{directory}: decoder graph does not match the manifest's {layers} layers "
                f"({len(missing)} inputs missing, first {missing[0]})"
            )
        if not set(graph.CHOICE_INPUTS) <= names:
            raise ModelLoadError(f"{directory}: decoder graph has no token-choice inputs; export the model again")

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """-> cross K, V per decoder layer, `[B, Hkv, S, D]` each."""
        return self.encoder.run(self.cross_outputs, dict(zip(graph.ENCODER_INPUTS, (input_ids, attention_mask))))

    def decode(
        self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray], top_k: int = 0, logprobs: bool = False
    ) -> DecoderStep:
        """Run the decoder on new tokens (`inputs` in the order of `step_inputs`); `top_k` > 0
        returns the last position's K best tokens (computed in the graph; `top_logprobs` are
        log-probabilities only with `logprobs`), 0 the whole vocabulary's logits."""
        k = min(top_k, self.vocab_size)
        scores = list(graph.TOP_OUTPUTS) if k else [graph.LOGITS]
        out = self._run([*self.new_kv_outputs, *scores], inputs, cache, k, logprobs)
        new, rest = out[: len(self.new_kv_outputs)], [x[:, -1] for x in out[len(self.new_kv_outputs) :]]
        if k:
            return DecoderStep(new, top_ids=rest[0], top_logits=rest[1], top_logprobs=rest[2])
        return DecoderStep(new, logits=rest[0])

    def new_kv(self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Only the new tokens' K/V (a decoder-only prompt's prefill, which asks for no logits)."""
        return self._run(self.new_kv_outputs, inputs, cache, 1, False)

    def cross_attention(self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray]) -> np.ndarray:
        """-> each decoder layer's cross-attention weights, mean over heads, `[B, L, T, S]`."""
        return self._run([graph.CROSS_ATTENTION], inputs, cache, 1, False)[0]

    def _run(self, outputs, inputs, cache, top_k: int, logprobs: bool) -> list[np.ndarray]:
        choice = (np.array([max(top_k, 1)], dtype=np.int64), np.array([logprobs]))
        feeds = dict(zip((*self.step_inputs, *graph.CHOICE_INPUTS), (*inputs, *choice)))
        return self.decoder.run(outputs, feeds | cache)
