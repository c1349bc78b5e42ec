"""Each weight stored once, the vocabulary matrix gathered in int8 (export/compact.py): a tied
model holds its vocabulary matrix once for both graphs, in fp32 and in int8; an untied embedding
is quantized per row; the encoder's outputs hold through ONNX Runtime's unsigned-weight rewrite;
the shared weights file is covered by the manifest's hashes."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from export.compact import TIED, WEIGHTS_FILE
from export.demo import build_model_dir, spec
from export.quantize import quantize_model_dir
from loadtests.bench_engine import current_export
from service import graph
from service.engine import Engine, EngineConfig
from service.errors import ModelLoadError
from service.manifest import load_manifest
from service.runner import session_options, shared_initializers

SPECS = {"tied": dict(tie_lm_head=True), "untied": dict(), "separate": dict(shared_embeddings=False)}


def build(tmp_path_factory, case: str):
    root = tmp_path_factory.mktemp(f"compact-{case}")
    _, fp32 = build_model_dir(root, "fp32", spec(**SPECS[case]))
    int8 = shutil.copytree(fp32, root / "int8")
    quantize_model_dir(int8)
    return case, fp32, int8


@pytest.fixture(scope="module", params=sorted(SPECS))
def dirs(request, tmp_path_factory):
    return build(tmp_path_factory, request.param)


@pytest.fixture(scope="module", params=["untied", "separate"])
def untied_dirs(request, tmp_path_factory):
    return build(tmp_path_factory, request.param)


def stored(directory):
    """Per graph: initializer name -> (offset, length, data type, dims) of those in the weights file."""
    out = {}
    for name in load_manifest(directory).files.graphs:
        model = onnx.load(str(directory / name), load_external_data=False)
        out[name] = {
            t.name: (int(info["offset"]), int(info["length"]), t.data_type, tuple(t.dims))
            for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL
            for info in [{e.key: e.value for e in t.external_data}]
        }
    return out


def test_each_distinct_tensor_is_stored_once(dirs):
    _, fp32, int8 = dirs
    for directory in (fp32, int8):
        blob = (directory / WEIGHTS_FILE).read_bytes()
        spans = {(o, n) for tensors in stored(directory).values() for o, n, _, _ in tensors.values()}
        contents = [hashlib.sha256(blob[o : o + n]).digest() for o, n in spans]
        assert len(contents) == len(set(contents))
        assert len(blob) < sum(n for _, n in spans) + 4096 * len(spans)
        assert load_manifest(directory).files.weights == WEIGHTS_FILE


def test_the_vocabulary_matrix_is_held_once(dirs):
    """Tied: both graphs read the output projection's matrix (int8: its quantized one) at one
    offset, and no other tensor of the vocabulary's size is stored."""
    case, fp32, int8 = dirs
    vocab = load_manifest(fp32).spec.vocab_size
    for directory, name in ((fp32, TIED), (int8, f"{TIED}_quantized")):
        tensors = stored(directory)
        big = {
            (o, dtype)
            for t in tensors.values()
            for o, _, dtype, dims in t.values()
            if len(dims) == 2 and vocab in dims and min(dims) > 1
        }
        if case == "tied":
            assert {t[name][:3] for t in tensors.values()} == {next(iter(tensors.values()))[name][:3]}
            assert len(big) == 1
        expected_type = TensorProto.FLOAT if directory == fp32 else TensorProto.INT8
        assert {dtype for _, dtype in big} == {expected_type}  # int8 graphs gather no fp32 vocabulary matrix


def encoder_outputs(directory, unsigned: bool = False) -> list[np.ndarray]:
    options = session_options(1, int8_kernels="unsigned" if unsigned else "signed")
    session = ort.InferenceSession(str(directory / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(3, load_manifest(directory).spec.vocab_size, size=(3, 7))
    mask = np.ones_like(ids)
    return session.run(None, dict(zip(graph.ENCODER_INPUTS, (ids, mask))))


def test_int8_embeddings_stay_close_to_fp32_and_survive_the_unsigned_rewrite(dirs):
    """The int8 encoder (its embedding gathered in int8) within a few percent of fp32's outputs;
    with ONNX Runtime turning signed weights unsigned (CPUs without VNNI) the same outputs."""
    _, fp32, int8 = dirs
    reference, signed, unsigned = encoder_outputs(fp32), encoder_outputs(int8), encoder_outputs(int8, unsigned=True)
    for r, s, u in zip(reference, signed, unsigned):
        assert np.abs(s - r).max() < 0.1 * np.abs(r).max()
        np.testing.assert_allclose(u, s, rtol=1e-4, atol=1e-4 * np.abs(s).max())


def test_an_untied_embedding_is_quantized_per_row(untied_dirs):
    _, fp32, int8 = untied_dirs
    model = onnx.load(str(int8 / "encoder.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (name,) = [
        n for n, a in inits.items() if n.endswith("_quantized") and a.shape[0] == load_manifest(int8).spec.vocab_size
    ]
    q, scale, zero = (
        inits[name],
        inits[name.replace("_quantized", "_scale")],
        inits[name.replace("_quantized", "_zero_point")],
    )
    fp32_model = onnx.load(str(fp32 / "encoder.onnx"))
    (embedding,) = [
        numpy_helper.to_array(t) for t in fp32_model.graph.initializer if tuple(t.dims) == q.shape and t.data_type == 1
    ]
    dequantized = (q.astype(np.float32) - zero[:, None]) * scale[:, None]
    assert np.all(np.abs(dequantized - embedding) <= scale[:, None] * 0.5 + 1e-7)


def test_a_changed_weights_file_is_refused_by_its_hash(dirs, tmp_path):
    _, fp32, _ = dirs
    broken = shutil.copytree(fp32, tmp_path / "broken")
    with (broken / WEIGHTS_FILE).open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelLoadError, match=f"{WEIGHTS_FILE} does not match its sha256"):
        load_manifest(broken)


def test_the_runner_hands_every_session_the_shared_tensors(dirs, tmp_path):
    """The vocabulary matrix that both graphs read is mapped once from the weights file and given
    to both sessions: the mapped values are the graphs' own, and decoding is the same as with
    each session loading its own copy."""
    case, fp32, int8 = dirs
    for directory, names in ((fp32, {TIED}), (int8, {f"{TIED}_quantized"})):  # (its scales: small, in the graphs)
        files = load_manifest(directory).files
        if case == "tied":
            assert names <= set(files.shared)
        model = onnx.load(str(directory / "decoder.onnx"))
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for name, value in shared_initializers(directory, files).items():
            np.testing.assert_array_equal(value.numpy(), inits[name])
        unshared = shutil.copytree(directory, tmp_path / f"{directory.name}-unshared")
        manifest = load_manifest(unshared)
        manifest.model_copy(update={"files": files.model_copy(update={"shared": {}})}).write(unshared)
        texts = ["hello world", "the quick brown fox jumps over the lazy dog", "one two"]
        config = EngineConfig(kv_rows=3, intra_op_threads=1)
        ours, theirs = (Engine(d, config).generate(texts, {"max_new_tokens": 12}) for d in (directory, unshared))
        assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]


def test_the_benchmarks_export_again_a_model_of_an_older_format(dirs, tmp_path):
    """`heed bench` caches its exports: one from before weights.bin must not be measured as heed's."""
    _, fp32, int8 = dirs
    assert current_export(fp32, None) and current_export(int8, "int8")
    assert not current_export(tmp_path / "none", None)
    old = shutil.copytree(fp32, tmp_path / "old")
    manifest = load_manifest(old)
    manifest.model_copy(update={"files": manifest.files.model_copy(update={"weights": None, "shared": {}})}).write(old)
    assert not current_export(old, None)
