"""int8 that fits the CPU it runs on (issue 17): heed exports signed int8 weights and
picks the kernels when the model loads, from the CPU's flags (service/cpu.py): signed (U8S8)
where x86 has VNNI or AMX, unsigned (U8U8, ONNX Runtime adding 128 to weights and zero points at
load) where it has not. The flags are faked here to load the same model as on both CPU kinds."""

from __future__ import annotations

import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

import export.quantize
from export.quantize import check_signed_int8, quantize_graph, quantize_model_dir
from service import cpu
from service.engine import Engine
from service.manifest import load_manifest
from service.runner import UNSIGNED_INT8_OPTION, ModelRunner, session_options
from service.settings import EngineConfig, Settings
from tests.test_hf_import import onnx_logits

CPU = "CPUExecutionProvider"
VNNI_CPU = frozenset("fpu sse4_2 avx2 fma avx512f avx512bw avx512vl avx512_vnni".split())  # Zen 4, Ice Lake
AMX_CPU = frozenset("avx2 avx512f avx_vnni avx512_vnni amx_tile amx_int8".split())  # Sapphire Rapids
AVX_VNNI_CPU = frozenset("avx2 fma avx_vnni".split())  # Alder Lake
AVX2_CPU = frozenset("fpu sse4_2 avx2 fma bmi2".split())  # Zen 2/3 (EPYC 7xx2/7xx3), Haswell..Cascade Lake-
AVX512_NO_VNNI_CPU = frozenset("avx2 avx512f avx512bw avx512vl".split())  # Skylake-SP
X86 = platform.machine().lower() in cpu.X86
needs_x86 = pytest.mark.skipif(not X86, reason="ONNX Runtime's signed-to-unsigned rewrite exists on x86 only")
THIS_CPU_HAS_VNNI = cpu.int8_kernels(cpu.cpu_flags()) == "signed"


@pytest.mark.parametrize(
    ("flags", "machine", "kernels"),
    [
        (VNNI_CPU, "x86_64", "signed"),
        (AMX_CPU, "x86_64", "signed"),
        (AVX_VNNI_CPU, "AMD64", "signed"),
        (AVX2_CPU, "x86_64", "unsigned"),
        (AVX512_NO_VNNI_CPU, "x86_64", "unsigned"),
        (None, "x86_64", "unsigned"),  # flags unreadable: the exact choice
        (frozenset(), "aarch64", "signed"),  # Arm's int8 dot products do not saturate
        (None, "arm64", "signed"),
    ],
)
def test_kernels_follow_the_cpu_flags(flags, machine, kernels):
    assert cpu.int8_kernels(flags, machine) == kernels


def test_setting_overrides_the_flags():
    assert cpu.choose_int8_kernels("signed", AVX2_CPU, "x86_64") == "signed"
    assert cpu.choose_int8_kernels("unsigned", VNNI_CPU, "x86_64") == "unsigned"
    assert cpu.choose_int8_kernels("auto", VNNI_CPU, "x86_64") == "signed"
    assert EngineConfig().int8_kernels == "auto"


def test_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("HEED_INT8_KERNELS", "unsigned")
    assert Settings().engine.int8_kernels == "unsigned"
    monkeypatch.setenv("HEED_INT8_KERNELS", "fast")
    with pytest.raises(ValueError, match="int8_kernels"):
        Settings()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n")
    assert cpu.cpu_flags(cpuinfo) == {"fpu", "avx2", "fma"}
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # Arm's /proc/cpuinfo
    assert cpu.cpu_flags(cpuinfo) is None
    assert cpu.cpu_flags(tmp_path / "missing") is None


def unsigned_option(options: ort.SessionOptions) -> str | None:
    try:
        return options.get_session_config_entry(UNSIGNED_INT8_OPTION)
    except RuntimeError:  # not set
        return None


def fake_cpu(monkeypatch, flags: frozenset[str]) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda *args: flags)


def quantize_unsigned_as_before(source: Path, target: Path) -> None:
    """export/quantize.py's settings until issue 17: unsigned, asymmetric per-channel weights."""
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"MatMulConstBOnly": True},
    )


@pytest.fixture(scope="module")
def int8_dirs(tmp_path_factory):
    """The tiny model fp32, quantized by heed (signed), and quantized as before issue 17 (unsigned)."""
    from export.demo import build_model_dir

    root = tmp_path_factory.mktemp("int8")
    _, fp32 = build_model_dir(root, "tiny")
    signed = shutil.copytree(fp32, root / "signed")
    quantize_model_dir(signed)
    unsigned = shutil.copytree(fp32, root / "unsigned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export.quantize, "quantize_graph", quantize_unsigned_as_before)
        quantize_model_dir(unsigned)
    return {"fp32": fp32, "signed": signed, "unsigned": unsigned}


# (weight, weight zero point) inputs of the quantized MatMuls, as exported and after ORT's fusions
WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "DynamicQuantizeMatMul": (1, 3), "MatMulIntegerToFloat": (1, 5)}


def weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each quantized MatMul's (weight, zero point) as integer arrays, by the weight's name in the
    exported graph (ONNX Runtime names a weight it turned unsigned <name>_s8_2_u8)."""
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in WEIGHT_INPUTS:
            w, zp = (node.input[i] for i in WEIGHT_INPUTS[node.op_type])
            found[w.removesuffix("_s8_2_u8")] = (initializers[w], initializers[zp])
    return found


def optimized(path: Path, options: ort.SessionOptions, out: Path) -> onnx.ModelProto:
    """The graph as ONNX Runtime runs it with these session options (weights after its rewrites)."""
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=[CPU])
    model = onnx.load(str(out), load_external_data=False)  # weights it left alone stay in the model's weights.bin
    onnx.load_external_data_for_model(model, str(path.parent))
    return model


def test_exported_int8_weights_are_signed_and_dequantize_as_before(int8_dirs):
    """Signed asymmetric per-channel weights: the dequantized weights are exactly those of the
    unsigned format heed exported before (same scales, weights and zero points 128 lower)."""
    for name in load_manifest(int8_dirs["signed"]).files.graphs:
        signed = onnx.load(str(int8_dirs["signed"] / name))
        before = onnx.load(str(int8_dirs["unsigned"] / name))
        scales = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (signed, before)]
        found, old = weights(signed), weights(before)
        assert found and found.keys() == old.keys()
        for weight, (w, zp) in found.items():
            assert w.dtype == np.int8 and zp.dtype == np.int8
            assert zp.any()  # asymmetric
            scale = weight.removesuffix("_quantized") + "_scale"
            np.testing.assert_array_equal(scales[0][scale], scales[1][scale])
            np.testing.assert_array_equal(w.astype(np.int32) - zp, old[weight][0].astype(np.int32) - old[weight][1])
    with pytest.raises(ValueError, match="not signed int8"):
        check_signed_int8(int8_dirs["unsigned"] / "decoder.onnx")


@needs_x86
@pytest.mark.parametrize(("flags", "kernels"), [(VNNI_CPU, "signed"), (AMX_CPU, "signed"), (AVX2_CPU, "unsigned")])
def test_the_runner_picks_the_weights_for_the_cpu(int8_dirs, monkeypatch, caplog, tmp_path, flags, kernels):
    """Loaded as on a VNNI CPU the signed weights stay; as on an AVX2 CPU the decoder session runs
    uint8 weights whose dequantized values equal the signed ones."""
    fake_cpu(monkeypatch, flags)
    directory = int8_dirs["signed"]
    with caplog.at_level(logging.INFO, logger="heed.runner"):
        runner = ModelRunner(directory, load_manifest(directory), "cpu", 1)
    assert runner.int8_kernels == kernels
    assert ("U8S8" if kernels == "signed" else "U8U8") in caplog.text
    options = runner.decoder.get_session_options()
    assert unsigned_option(options) == ("1" if kernels == "unsigned" else None)

    signed = weights(onnx.load(str(directory / "decoder.onnx")))
    running = weights(optimized(directory / "decoder.onnx", options, tmp_path / "decoder.onnx"))
    assert running.keys() == signed.keys()
    for name, (w, zp) in running.items():
        assert w.dtype == (np.int8 if kernels == "signed" else np.uint8)
        w8, zp8 = signed[name]
        np.testing.assert_array_equal(w.astype(np.int32) - zp[None, :], w8.astype(np.int32) - zp8[None, :])


def test_engine_follows_the_setting(int8_dirs, monkeypatch):
    fake_cpu(monkeypatch, AVX2_CPU)
    engine = Engine(int8_dirs["signed"], EngineConfig(intra_op_threads=1, kv_rows=2))
    assert engine.runner.int8_kernels == ("unsigned" if X86 else "signed")
    runner = ModelRunner(int8_dirs["signed"], engine.manifest, "cpu", 1, int8_kernels="signed")
    assert runner.int8_kernels == "signed"  # HEED_INT8_KERNELS=signed (once the engine passes it on)


def saturating_graph(path: Path) -> np.ndarray:
    """One MatMul whose exact int8 products overflow 16-bit pair sums (255 * 127 * 2 > 32767); its
    weights are integers from -128 to 127 in every column and its input integers in 0..255, so
    int8 quantization is lossless (scales 1, zero points 0) and the exact result is x @ w."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (64, 16)).astype(np.float32)
    w[2:, :4] = 127  # four columns of 127: their pairs of products saturate in 16 bits
    w[0], w[1] = 127, -128
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 16])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w


@needs_x86
@pytest.mark.parametrize("rows", [1, 5, 32])
def test_unsigned_at_load_is_exact_where_signed_would_saturate(tmp_path, rows):
    w = saturating_graph(tmp_path / "fp32.onnx")
    quantize_graph(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    x = np.random.default_rng(rows).integers(0, 256, (rows, 64)).astype(np.float32)
    x[0, :], x[-1, -1] = 255, 0
    exact = x.astype(np.float64) @ w
    for kernels in ("unsigned", "signed") if THIS_CPU_HAS_VNNI else ("unsigned",):
        options = session_options(1, False, kernels)
        y = ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=[CPU]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(y, exact, err_msg=f"{kernels} int8 kernels")


def teacher_forced_logits(directory: Path, kernels: str) -> np.ndarray:
    """Logits of 4 decoder steps of 2 inputs, one cached step at a time, with these int8 kernels."""
    ids = np.array([[3, 4, 5, 6, 7, 1, 1], [8, 9, 10, 11, 12, 13, 1]], dtype=np.int64)
    start = load_manifest(directory).special_tokens.decoder_start_id
    decoder_ids = np.array([[start, 5, 9, 4]] * 2, dtype=np.int64)
    return onnx_logits(directory, ids, np.ones_like(ids), decoder_ids, kernels)


@needs_x86
@pytest.mark.skipif(not THIS_CPU_HAS_VNNI, reason="signed weights saturate on this CPU: nothing exact to compare")
def test_signed_and_unsigned_at_load_give_the_same_logits(int8_dirs):
    signed = teacher_forced_logits(int8_dirs["signed"], "signed")
    unsigned = teacher_forced_logits(int8_dirs["signed"], "unsigned")
    np.testing.assert_allclose(unsigned, signed, rtol=1e-5, atol=1e-5 * float(signed.std()))
    fp32 = teacher_forced_logits(int8_dirs["fp32"], "signed")
    assert np.abs(unsigned - fp32).max() > 1e-4  # the comparison can fail: int8 is not fp32


@pytest.mark.parametrize("flags", [VNNI_CPU, AVX2_CPU])
def test_a_model_quantized_before_still_loads_and_runs_unchanged(int8_dirs, monkeypatch, tmp_path, flags):
    """Unsigned asymmetric weights (heed's int8 until issue 17) load on both CPU kinds, run as
    they are (U8U8, nothing rewritten) and decode what they decoded before."""
    fake_cpu(monkeypatch, flags)
    directory = int8_dirs["unsigned"]
    assert load_manifest(directory).quantization == "int8"
    engine = Engine(directory, EngineConfig(intra_op_threads=1, kv_rows=4))
    options = engine.runner.decoder.get_session_options()
    stored = weights(onnx.load(str(directory / "decoder.onnx")))
    running = weights(optimized(directory / "decoder.onnx", options, tmp_path / "decoder.onnx"))
    assert any(zp.any() for _, zp in stored.values())  # asymmetric: zero points are not 0
    for name, (w, zp) in running.items():
        assert w.dtype == np.uint8
        np.testing.assert_array_equal(w, stored[name][0])
        np.testing.assert_array_equal(zp, stored[name][1])
    texts = ["3 4 5 6", "7 8 9"]
    results = engine.generate(texts, {"max_new_tokens": 6})
    assert all(r.output_tokens > 0 for r in results)
    fake_cpu(monkeypatch, VNNI_CPU if flags is AVX2_CPU else AVX2_CPU)
    other = Engine(directory, EngineConfig(intra_op_threads=1, kv_rows=4)).generate(texts, {"max_new_tokens": 6})
    assert [r.token_ids for r in other] == [r.token_ids for r in results]  # the same U8U8 kernels either way


@pytest.fixture(scope="module", params=["marian", "bart", "mbart", "t5", "t5-gated", "pegasus"])
def hf_int8_dirs(request, tmp_path_factory):
    """A tiny HF checkpoint (tests/test_hf_import.py's builders) exported fp32, quantized by heed
    (signed) and quantized as before issue 17 (unsigned)."""
    from export.cli import main as export_main
    from tests.test_hf_import import ARCHITECTURES

    arch = request.param
    builder, task, target, _ = ARCHITECTURES[arch]
    root = tmp_path_factory.mktemp(arch)
    argv = ["--from-hf", str(builder(root / "hf")), "--name", arch, "--task", task, "--out-repo", str(root)]
    assert export_main(argv) == 0
    signed = shutil.copytree(root / arch, root / "signed")
    quantize_model_dir(signed)
    unsigned = shutil.copytree(root / arch, root / "unsigned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export.quantize, "quantize_graph", quantize_unsigned_as_before)
        quantize_model_dir(unsigned)
    return arch, target, {"fp32": root / arch, "signed": signed, "unsigned": unsigned}


def test_int8_agreement_with_fp32_per_format(hf_int8_dirs, monkeypatch):
    """The share of 24 inputs whose greedy output equals fp32's, and the logit drift, for each
    format: unsigned weights as before, signed weights made unsigned at load (the AVX2 choice), and
    signed weights kept (the VNNI choice; exact only on a CPU with VNNI). Reported, and the new
    formats hold the same dequantized weights as before, so they must do as well wherever their
    kernels are exact."""
    from tests import hf_builders
    from tests.test_hf_import import MAX_NEW_TOKENS

    arch, target, dirs = hf_int8_dirs
    texts, options = hf_builders.inputs(24), {"max_new_tokens": MAX_NEW_TOKENS}
    config = EngineConfig(kv_rows=24, intra_op_threads=1)
    fp32 = Engine(dirs["fp32"], config).generate(texts, options, target_lang=target)
    reference = teacher_forced_logits(dirs["fp32"], "signed")
    formats = {  # name: (model dir, CPU it is loaded as, kernels)
        "U8U8 as before": ("unsigned", VNNI_CPU, "signed"),
        "signed -> U8U8 at load": ("signed", AVX2_CPU, "unsigned"),
        "signed U8S8": ("signed", VNNI_CPU, "signed"),
    }
    share, drift = {}, {}
    for name, (kind, flags, kernels) in formats.items():
        fake_cpu(monkeypatch, flags)
        engine = Engine(dirs[kind], config)
        assert engine.runner.int8_kernels == (kernels if X86 else "signed")
        outputs = engine.generate(texts, options, target_lang=target)
        share[name] = sum(a.token_ids == b.token_ids for a, b in zip(fp32, outputs)) / len(texts)
        logits = teacher_forced_logits(dirs[kind], kernels)
        drift[name] = float(np.abs(logits - reference).max() / reference.std())
        agreement = f"greedy output equals fp32 on {share[name]:.0%} of {len(texts)} inputs"
        print(f"{arch}: int8 {name}: {agreement}; logit drift {drift[name]:.3f} std")
    exact = ["signed -> U8U8 at load"] + (["signed U8S8"] if THIS_CPU_HAS_VNNI or not X86 else [])
    assert drift["U8U8 as before"] < 0.2
    for name in exact:  # signed weights on an AVX2 CPU's U8S8 kernels drifted 0.6-1.7 std
        assert share[name] >= share["U8U8 as before"], name
        assert drift[name] <= drift["U8U8 as before"] + 1e-3, name
