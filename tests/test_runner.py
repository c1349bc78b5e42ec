"""The model runner's provider choice (CUDA where configured and present, else the CPU) and its
ONNX Runtime session options, checked on this CPU-only machine."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import textwrap

import pytest

from service import cpu
from service.engine import Engine
from service.runner import DENORMALS_AS_ZERO_OPTION, select_providers, session_options
from service.settings import EngineConfig

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.mark.parametrize(
    ("requested", "available", "chosen"),
    [
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("auto", [CPU], [CPU]),
    ],
)
def test_provider_selection(requested, available, chosen):
    assert select_providers(requested, available) == chosen


def test_cuda_without_onnxruntime_gpu_falls_back_to_cpu_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="heed.runner"):
        assert select_providers("cuda", [CPU]) == [CPU]
    assert "no CUDAExecutionProvider" in caplog.text


@pytest.mark.parametrize("spinning", [False, True])
def test_session_options(spinning):
    options = session_options(3, spinning)
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
    assert options.get_session_config_entry(DENORMALS_AS_ZERO_OPTION) == "1"


@pytest.mark.skipif(
    platform.machine().lower() not in cpu.X86, reason="ONNX Runtime sets the denormal flags on x86 only"
)
def test_sessions_flush_denormals_to_zero():
    """Halving 1e-38 (below float32's smallest normal) gives a denormal unless the session flushes it.
    In a fresh interpreter: ONNX Runtime sets the creating thread's flags once per process."""
    script = textwrap.dedent(
        """
        import numpy as np, onnxruntime as ort
        from onnx import TensorProto, helper
        from service.runner import session_options
        CPU = "CPUExecutionProvider"
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "half"], ["y"])], "halve",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
            [helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), session_options(2), providers=[CPU])
        print(np.count_nonzero(session.run(None, {"x": np.full(1 << 20, 1e-38, np.float32)})[0]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0"]


def test_engine_sessions_follow_the_settings(tiny_dir):
    engine = Engine(tiny_dir, EngineConfig(provider="cuda", intra_op_threads=1))  # no GPU here: CPU fallback
    for session in (engine.runner.encoder, engine.runner.decoder):
        assert session.get_providers() == [CPU]
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # serving default
        assert options.intra_op_num_threads == 1
    assert engine.generate(["3 4"], {"max_new_tokens": 3})[0].output_tokens > 0
