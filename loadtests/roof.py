"""The roof: the reference decoder's matrix products alone, as ONNX Runtime runs them here.

Per decoder layer the six d x d projections a step needs (self-attention Q, K, V, output;
cross-attention Q, output: cross K/V come from the encoder once) and the two FFN products,
then the output projection over the vocabulary, chained in one graph with nothing else: no
attention, no normalization, no token choice, no encoder. A decoding engine cannot run a step
faster than this graph runs with as many rows, so `heed bench engine` shows every engine's
throughput next to it. int8 is quantized with heed's own settings (export/quantize.py: signed
weights) and runs with either kernels: U8S8 (the weights as they are, what heed runs on CPUs with
VNNI or AMX) or U8U8 (made unsigned at load, what heed runs on x86 without; service/cpu.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def build_roof_graph(checkpoint: Path, path: Path) -> Path:
    """Write the fp32 roof graph for an HF checkpoint's decoder shapes (random weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((checkpoint / "config.json").read_text())
    d, ffn, vocab = config["d_model"], config["decoder_ffn_dim"], config["vocab_size"]
    shapes = [(d, d)] * 6 + [(d, ffn), (ffn, d)]
    shapes = shapes * config["decoder_layers"] + [(d, vocab)]
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i, shape in enumerate(shapes):
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "roof",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", d])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["rows", vocab])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def prepare_roofs(checkpoint: Path, work: Path) -> dict[str, Path]:
    """roof-fp32 and roof-int8 graphs in `work`, built once."""
    from export.quantize import quantize_graph

    fp32, int8 = work / "roof-fp32.onnx", work / "roof-int8-signed.onnx"  # not an older unsigned roof-int8.onnx
    if not fp32.is_file():
        build_roof_graph(checkpoint, fp32)
    if not int8.is_file():
        quantize_graph(fp32, int8)
    return {"roof-fp32": fp32, "roof-int8": int8}


def roof_steps(path: Path, threads: int, int8_kernels: str = "auto"):
    """-> run(rows, steps): the graph `steps` times on `rows` rows, as a decoder would step, with
    the int8 kernels heed's runner would pick here (`auto`), or `signed` (U8S8) or `unsigned` (U8U8)."""
    import onnxruntime as ort

    from service.cpu import choose_int8_kernels
    from service.runner import session_options

    options = session_options(threads, spinning=True, int8_kernels=choose_int8_kernels(int8_kernels))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]

    def run(rows: int, steps: int) -> None:
        x = np.ones((rows, width), dtype=np.float32)
        for _ in range(steps):
            session.run(None, {"x": x})

    return run
