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
    """One decoder step's scores at the last position: either the whole vocabulary's `logits`
    `[B, V]` or the K best tokens `top_ids`, `top_logits`, `top_logprobs` `[B, K]`."""

    logits: np.ndarray | None = None
    top_ids: np.ndarray | None = None
    top_logits: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None


def _bind_buffer(bind, name: str, array: np.ndarray) -> None:
    """Bind a graph input or output to `array`'s own memory (a view of a cache buffer), not a copy."""
    if not array.flags.c_contiguous:
        raise ValueError(f"{name}: cache views must be contiguous to be bound in place")
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


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
        self.past_inputs = graph.past_inputs(layers)
        self.present_outputs = graph.present_outputs(layers)
        names = {i.name for i in self.decoder.get_inputs()}
        missing = [n for n in (*self.step_inputs, *self.cache_inputs) if n not in names]
        if missing:
            raise ModelLoadError(
                f"{directory}: decoder graph does not match the manifest's {layers} layers "
                f"({len(missing)} inputs missing, first {missing[0]})"
            )
        if not set(graph.CHOICE_INPUTS) <= names:
            raise ModelLoadError(f"{directory}: decoder graph has no token-choice inputs; export the model again")
        if not set(self.present_outputs) <= {o.name for o in self.decoder.get_outputs()}:
            raise ModelLoadError(
                f"{directory}: decoder graph returns new K/V instead of writing its cache in place; "
                "export the model again"
            )

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """-> cross K, V per decoder layer, `[B, Hkv, S, D]` each."""
        return self.encoder.run(self.cross_outputs, dict(zip(graph.ENCODER_INPUTS, (input_ids, attention_mask))))

    def decode(
        self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray], top_k: int = 0, logprobs: bool = False
    ) -> DecoderStep:
        """Run the decoder on new tokens (`inputs` in the order of `step_inputs`) over `cache`, the
        views of the KV cache's buffers by input name; `top_k` > 0 returns the last position's K
        best tokens (computed in the graph; `top_logprobs` are log-probabilities only with
        `logprobs`), 0 the whole vocabulary's logits.

        The graph writes the new tokens' K/V into the cache views themselves: every `present`
        output is bound to the memory of its `past` input, and every cache input is bound without
        a copy."""
        k = min(top_k, self.vocab_size)
        scores = list(graph.TOP_OUTPUTS) if k else [graph.LOGITS]
        binding = self.decoder.io_binding()
        for name, value in self._feeds(inputs, k, logprobs).items():
            binding.bind_cpu_input(name, value)
        for name, view in cache.items():
            _bind_buffer(binding.bind_input, name, view)
        for past, present in zip(self.past_inputs, self.present_outputs):
            _bind_buffer(binding.bind_output, present, cache[past])
        for name in scores:
            binding.bind_output(name)
        self.decoder.run_with_iobinding(binding)
        out = [value.numpy()[:, -1] for value in binding.get_outputs()[len(self.present_outputs) :]]
        if k:
            return DecoderStep(top_ids=out[0], top_logits=out[1], top_logprobs=out[2])
        return DecoderStep(logits=out[0])

    def prefill(self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray]) -> list[np.ndarray]:
        """A decoder-only prompt's pass, which asks for no logits: each layer's K, V after it,
        `cache` with the prompts' K/V written (a copy: the runtime writes them into each sequence's rows)."""
        return self._run(self.present_outputs, inputs, cache)

    def cross_attention(self, inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray]) -> np.ndarray:
        """-> each decoder layer's cross-attention weights, mean over heads, `[B, L, T, S]`."""
        return self._run([graph.CROSS_ATTENTION], inputs, cache)[0]

    def _feeds(self, inputs: tuple[np.ndarray, ...], top_k: int, logprobs: bool) -> dict[str, np.ndarray]:
        choice = (np.array([max(top_k, 1)], dtype=np.int64), np.array([logprobs]))
        return dict(zip((*self.step_inputs, *graph.CHOICE_INPUTS), (*inputs, *choice)))

    def _run(self, outputs: list[str], inputs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray]) -> list:
        return self.decoder.run(outputs, self._feeds(inputs, 1, False) | cache)
