"""int8 dynamic quantization of an exported model directory (onnxruntime.quantization).

Weights of every MatMul/Gemm become 8-bit with per-channel scales; activations are quantized on
the fly per call. It shrinks the graphs about 4x and speeds up CPU GEMMs; outputs change slightly,
so heed reports how often greedy output still equals fp32's instead of promising identity.

Weights are signed (QInt8), asymmetric per channel: one format for every CPU, whose kernels are
chosen when the model loads (service/cpu.py, service/runner.py). On x86 CPUs with VNNI or AMX,
ONNX Runtime multiplies them by unsigned activations exactly with its fastest int8 kernels
(U8S8). On x86 CPUs without, that path goes through an instruction that saturates 16-bit sums
(logits drifted 0.6-1.7 standard deviations on heed's test models, against 0.03-0.07 for
unsigned weights), so there the runner has ONNX Runtime add 128 to every weight and zero point
at load: the same dequantized weights, computed by its exact U8U8 kernel. Asymmetric, not
symmetric: the dequantized weights are exactly those of heed's earlier unsigned format (256
levels from each channel's minimum to its maximum), so int8 accuracy is unchanged; symmetric
weights waste levels and agreed less often with fp32 on two of six test models (docs/performance.md).
Model directories quantized earlier hold unsigned weights (QUInt8) and load and run unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

from export.compact import compact
from service.manifest import Manifest, file_digest, load_manifest


def quantize_graph(source: Path, target: Path) -> None:
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": False},
    )
    check_signed_int8(target)


def check_signed_int8(path: Path) -> None:
    """Every quantized MatMul's constant weights and their zero points are int8 (what the runner's
    choice of kernels expects; adding 128 to both at load keeps the dequantized values)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    types = {i.name: i.data_type for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in types:
            found = [types.get(name) for name in (node.input[1], node.input[3] if len(node.input) > 3 else "")]
            if found != [onnx.TensorProto.INT8] * 2:
                raise ValueError(f"{path}: {node.name}: weights are not signed int8 ({node.input[1]})")


def quantize_model_dir(directory: Path) -> Manifest:
    """Quantize a model directory's fp32 graphs in place and record it in the manifest."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    if manifest.quantization != "none":
        raise ValueError(f"{directory}: already quantized ({manifest.quantization})")
    files = manifest.files
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for name in files.graphs:
            quantized = Path(tmp) / name
            quantize_graph(directory / name, quantized)
            quantized.replace(directory / name)
    files = compact(directory, files, manifest.spec.vocab_size)
    sha256 = dict(manifest.sha256) | {n: file_digest(directory / n) for n in files.hashed}
    updated = manifest.model_copy(update={"quantization": "int8", "sha256": sha256, "files": files})
    updated.write(directory)
    return updated
