"""Each weight stored once, the vocabulary matrix compact: the last pass over a model directory's
graphs, after export and again after int8 quantization.

A tied checkpoint has one vocabulary matrix, but the exported graphs held three: the embedding in
the encoder, the embedding in the decoder, and its transpose as the decoder's output projection
(113 MiB each in fp32 at Marian-base size, the int8 model's largest part since quantization leaves
gathers alone). Here every embedding gather reads the output projection's matrix instead, along its
other axis (`Gather(axis=1)` of `[D, V]`, then a transpose): exactly the same floats; and in int8
graphs it reads the projection's quantized matrix, dequantized after the gather with the same
per-vocabulary-entry scale and zero point the projection uses. An untied embedding is quantized per
row in int8 graphs, the same format. Then all graphs' initializers go into one external-data file,
each distinct tensor once (by content), at page-aligned offsets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.manifest import ModelFiles, SharedTensor

WEIGHTS_FILE = "weights.bin"
ALIGN = 4096
TIED = "heed::vocabulary"  # the output projection's matrix `[D, V]`, shared by every graph
INLINE_BYTES = 1024  # smaller tensors stay in the graph file


def compact(directory: Path, files: ModelFiles, vocab_size: int) -> ModelFiles:
    """Rewrite the graphs of `files` in `directory` in place; returns `files` with the weights
    file and the tensors that several graphs share."""
    models = {name: onnx.load(str(directory / name)) for name in files.graphs}
    tie_embeddings(list(models.values()), vocab_size)
    quantize_embeddings(list(models.values()), vocab_size)
    return files.model_copy(update={"weights": WEIGHTS_FILE, "shared": store_once(models, directory)})


def _initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _vocab_gathers(model: onnx.ModelProto, vocab_size: int) -> list[tuple[onnx.NodeProto, TensorProto, int]]:
    """(node, matrix, axis) of the gathers that read a float `[V, D]` or `[D, V]` initializer along V."""
    inits = _initializers(model)
    found = []
    for node in model.graph.node:
        data = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if data is not None and data.data_type == TensorProto.FLOAT and len(data.dims) == 2 and axis < 2:
            found += [(node, data, axis)] if data.dims[axis] == vocab_size else []
    return found


def _rank(model: onnx.ModelProto, name: str) -> int:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    for info in (*inferred.graph.input, *inferred.graph.value_info):
        if info.name == name and info.type.tensor_type.HasField("shape"):
            return len(info.type.tensor_type.shape.dim)
    raise ValueError(f"the rank of {name!r} is unknown")


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    for tensor in model.graph.initializer:
        if tensor.name == old:
            tensor.name = new


def _used(graph: onnx.GraphProto) -> set[str]:
    """Names the graph's nodes read, its subgraphs' (If branches read outer initializers) included."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in (*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])):
                names |= _used(sub)
    return names


def _drop_unused(model: onnx.ModelProto) -> None:
    used = _used(model.graph)
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _replace(model: onnx.ModelProto, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    graph_nodes = list(model.graph.node)
    at = graph_nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend(graph_nodes[:at] + nodes + graph_nodes[at + 1 :])


def tie_embeddings(models: list[onnx.ModelProto], vocab_size: int) -> None:
    """Point every embedding gather whose matrix is the transpose of a `[D, V]` initializer (the
    tied output projection) at that initializer, renamed `TIED` and copied into every graph."""
    heads = [
        (model, t)
        for model in models
        for t in model.graph.initializer
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and t.dims[1] == vocab_size
    ]
    if not heads:
        return
    arrays = {id(t): numpy_helper.to_array(t) for _, t in heads}
    for model in models:
        for node, data, axis in _vocab_gathers(model, vocab_size):
            if axis != 0:  # already reads a `[D, V]` matrix
                continue
            embedding = numpy_helper.to_array(data)
            match = next(((m, t) for m, t in heads if np.array_equal(arrays[id(t)], embedding.T)), None)
            if match is None:  # untied
                continue
            owner, head = match
            if head.name != TIED:
                _rename(owner, head.name, TIED)
            if TIED not in _initializers(model):
                model.graph.initializer.append(head)
            rank = _rank(model, node.input[1])
            gathered = f"{node.output[0]}/by_column"
            _replace(
                model,
                node,
                [
                    helper.make_node("Gather", [TIED, node.input[1]], [gathered], axis=1),
                    helper.make_node("Transpose", [gathered], list(node.output), perm=[*range(1, rank + 1), 0]),
                ],
            )
            _drop_unused(model)


def _per_channel_int8(matrix: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric int8 along `axis` (one scale and zero point per index of it), as heed's MatMul
    weights are quantized (export/quantize.py): 256 levels from each channel's minimum to maximum."""
    other = 1 - axis
    low = np.minimum(matrix.min(axis=other), 0.0)
    high = np.maximum(matrix.max(axis=other), 0.0)
    scale = ((high - low) / 255.0).astype(np.float32)
    scale[scale == 0] = 1.0
    zero = np.clip(np.round(-128.0 - low / scale), -128, 127).astype(np.int8)
    shape = (-1, 1) if axis == 0 else (1, -1)
    quantized = np.clip(np.round(matrix / scale.reshape(shape)) + zero.reshape(shape), -128, 127)
    return quantized.astype(np.int8), scale, zero


def quantize_embeddings(models: list[onnx.ModelProto], vocab_size: int) -> None:
    """In int8 graphs (those with MatMulInteger), gather the vocabulary matrix in int8 and
    dequantize the gathered rows: from the output projection's own quantized matrix where the
    embedding is tied to it, else from the embedding quantized per row here."""
    if not any(n.op_type == "MatMulInteger" for m in models for n in m.graph.node):
        return
    pool = {t.name: t for m in models for t in m.graph.initializer if t.name.startswith(TIED)}
    quantized: dict[bytes, list[str]] = {}  # an untied embedding's content -> its int8 tensors' names
    for model in models:
        for node, data, axis in _vocab_gathers(model, vocab_size):
            names = [f"{data.name}_quantized", f"{data.name}_scale", f"{data.name}_zero_point"]
            if not all(n in pool for n in names):  # an untied embedding: quantized here, once per content
                matrix = numpy_helper.to_array(data)
                digest = hashlib.sha256(matrix.tobytes()).digest()
                if digest not in quantized:
                    stem = data.name if f"{data.name}_quantized" not in pool else f"{data.name}_{digest.hex()[:8]}"
                    quantized[digest] = [f"{stem}_quantized", f"{stem}_scale", f"{stem}_zero_point"]
                    for name, array in zip(quantized[digest], _per_channel_int8(matrix, axis)):
                        pool[name] = numpy_helper.from_array(array, name)
                names = quantized[digest]
            for name in names:
                if name not in _initializers(model):
                    model.graph.initializer.append(pool[name])
            ids, out = node.input[1], node.output[0]
            rows = [f"{out}/{part}" for part in ("q", "qf", "zero", "zerof", "scale", "centered")]
            dequantized = [
                helper.make_node("Gather", [names[0], ids], [rows[0]], axis=axis),
                helper.make_node("Cast", [rows[0]], [rows[1]], to=TensorProto.FLOAT),
                helper.make_node("Gather", [names[2], ids], [rows[2]], axis=0),
                helper.make_node("Cast", [rows[2]], [rows[3]], to=TensorProto.FLOAT),
                helper.make_node("Gather", [names[1], ids], [rows[4]], axis=0),
            ]
            if axis == 0:  # [..., D] rows: the per-row numbers broadcast over D
                expand = [f"{out}/axes", f"{rows[3]}/col", f"{rows[4]}/col"]
                model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), expand[0]))
                dequantized += [
                    helper.make_node("Unsqueeze", [rows[3], expand[0]], [expand[1]]),
                    helper.make_node("Unsqueeze", [rows[4], expand[0]], [expand[2]]),
                    helper.make_node("Sub", [rows[1], expand[1]], [rows[5]]),
                    helper.make_node("Mul", [rows[5], expand[2]], [out]),
                ]
            else:  # [D, ...] columns: the per-column numbers broadcast over the leading D
                dequantized += [
                    helper.make_node("Sub", [rows[1], rows[3]], [rows[5]]),
                    helper.make_node("Mul", [rows[5], rows[4]], [out]),
                ]
            _replace(model, node, dequantized)
        _drop_unused(model)


def store_once(models: dict[str, onnx.ModelProto], directory: Path) -> dict[str, SharedTensor]:
    """Write every graph's larger initializers into one weights file, each distinct tensor once,
    and save the graphs pointing into it; returns the tensors more than one graph reads by the
    same name."""
    offsets: dict[bytes, tuple[int, int]] = {}
    readers: dict[tuple[str, int], list[TensorProto]] = {}
    with (directory / WEIGHTS_FILE).open("wb") as weights:
        for model in models.values():
            for tensor in model.graph.initializer:
                if tensor.data_type == TensorProto.STRING:
                    continue
                raw = numpy_helper.to_array(tensor).tobytes()
                if len(raw) < INLINE_BYTES:
                    continue
                key = hashlib.sha256(raw).digest()
                if key not in offsets:
                    start = -weights.tell() % ALIGN
                    weights.write(b"\0" * start)
                    offsets[key] = (weights.tell(), len(raw))
                    weights.write(raw)
                offset, length = offsets[key]
                readers.setdefault((tensor.name, offset), []).append(tensor)
                tensor.ClearField("raw_data")
                for field in ("float_data", "int32_data", "int64_data", "double_data", "string_data"):
                    tensor.ClearField(field)
                tensor.data_location = TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                    tensor.external_data.add(key=k, value=v)
    for name, model in models.items():
        onnx.save(model, str(directory / name))
    return {
        name: SharedTensor(
            offset=offset, dtype=helper.tensor_dtype_to_np_dtype(tensors[0].data_type).name, shape=list(tensors[0].dims)
        )
        for (name, offset), tensors in readers.items()
        if len(tensors) > 1
    }
