"""The benchmark's roof graph holds exactly the matrix products of one decoder step."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from loadtests.roof import prepare_roofs, roof_steps


def test_roof_graphs_hold_one_decoder_steps_matrix_products(tmp_path):
    checkpoint = tmp_path / "hf"
    checkpoint.mkdir()
    config = {"d_model": 16, "decoder_ffn_dim": 24, "vocab_size": 37, "decoder_layers": 2}
    (checkpoint / "config.json").write_text(json.dumps(config))
    graphs = prepare_roofs(checkpoint, tmp_path)

    fp32 = onnx.load(graphs["roof-fp32"])
    shapes = [tuple(w.dims) for w in fp32.graph.initializer]
    per_layer = [(16, 16)] * 6 + [(16, 24), (24, 16)]  # self Q K V O, cross Q O, FFN in and out
    assert shapes == per_layer * 2 + [(16, 37)]
    assert {n.op_type for n in fp32.graph.node} == {"MatMul"}
    int8_ops = [n.op_type for n in onnx.load(graphs["roof-int8"]).graph.node]
    assert int8_ops.count("MatMulInteger") == 17 and "MatMul" not in int8_ops  # heed's int8 settings

    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    outputs = [ort.InferenceSession(str(g)).run(None, {"x": x})[0] for g in graphs.values()]
    assert outputs[0].shape == (3, 37)
    assert np.corrcoef(outputs[0].ravel(), outputs[1].ravel())[0, 1] > 0.95  # int8: the same products

    roof_steps(graphs["roof-int8"], threads=1)(rows=4, steps=2)
