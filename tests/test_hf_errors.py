"""The importer's contract at its edges: clear errors for what it cannot convert, weights from
`pytorch_model.bin` without pickle, generation-config mapping, and `--quantize int8` from the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.cli import main as export_main
from export.hf import build_model, convert
from export.hf.base import Checkpoint, ConversionError, generation_defaults
from service.manifest import load_manifest
from tests import hf_builders

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """An untrained tiny T5 (conversion does not care about the weights' values)."""
    return hf_builders.t5(tmp_path_factory.mktemp("t5") / "hf", steps=0)


def test_unsupported_architecture_names_the_supported_ones(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bloom"}))
    supported = r"supported: bart, gpt2, llama, .*marian, mbart, mistral, pegasus, qwen2, t5"
    with pytest.raises(ConversionError, match=r"'bloom' is not supported; " + supported):
        convert(tmp_path)
    code = export_main(["--from-hf", str(tmp_path), "--name", "x", "--task", "summarize", "--out-repo", str(tmp_path)])
    assert code == 2
    assert "'bloom' is not supported" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", "missing config.json"),
        ("model.safetensors", "no weights found"),
        ("tokenizer.json", "no tokenizer files"),
    ],
)
def test_missing_files_are_named(t5_dir, tmp_path, remove, message):
    broken = shutil.copytree(t5_dir, tmp_path / "hf")
    (broken / remove).unlink()
    if remove == "tokenizer.json":
        (broken / "spiece.model").unlink(missing_ok=True)
    with pytest.raises(ConversionError, match=message):
        build_model(convert(broken))


def test_not_a_directory(tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        convert(tmp_path / "nowhere")


def test_mismatched_shapes_are_reported(t5_dir, tmp_path):
    broken = shutil.copytree(t5_dir, tmp_path / "hf")
    config = json.loads((broken / "config.json").read_text())
    config["d_ff"] *= 2
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"has shape \(64, 32\), but the config implies \(128, 32\)"):
        build_model(convert(broken))


def test_missing_tensor_is_named(t5_dir, tmp_path):
    broken = shutil.copytree(t5_dir, tmp_path / "hf")
    config = json.loads((broken / "config.json").read_text())
    config["num_layers"] += 1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"no tensor 'encoder\.block\.3\.layer\.0\.SelfAttention\.q\.weight'"):
        convert(broken)


def test_pytorch_bin_weights_load_without_pickle(t5_dir, tmp_path):
    """Only pytorch_model.bin: read with weights_only=True; same model as from safetensors."""
    legacy = shutil.copytree(t5_dir, tmp_path / "hf")
    state = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(t5_dir)).state_dict()
    torch.save(state, legacy / "pytorch_model.bin")
    (legacy / "model.safetensors").unlink()
    ours, reference = build_model(convert(legacy)), build_model(convert(t5_dir))
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_pickled_objects_in_pytorch_bin_are_refused(t5_dir, tmp_path):
    legacy = shutil.copytree(t5_dir, tmp_path / "hf")
    (legacy / "model.safetensors").unlink()
    torch.save({"weights": object()}, legacy / "pytorch_model.bin")  # arbitrary pickle, not a state dict
    with pytest.raises(ConversionError, match="weights-only"):
        convert(legacy)


def test_generation_config_maps_to_manifest_defaults(tmp_path):
    """A bart-large-cnn-like generation config; lengths count the start token in transformers."""
    generation = {
        "num_beams": 4,
        "max_length": 142,
        "min_length": 56,
        "length_penalty": 2.0,
        "no_repeat_ngram_size": 3,
        "early_stopping": True,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
        "bad_words_ids": [[5], [6, 7]],
    }
    defaults = generation_defaults(Checkpoint(tmp_path, {"model_type": "bart"}, generation), pad_id=1)
    assert defaults.beam_size == 4
    assert (defaults.max_new_tokens, defaults.min_new_tokens) == (141, 55)
    assert (defaults.length_penalty, defaults.no_repeat_ngram_size, defaults.early_stopping) == (2.0, 3, True)
    assert (defaults.forced_bos_id, defaults.forced_eos_id) == (0, 2)
    assert defaults.bad_words_ids == [[5], [6, 7]]
    # As in transformers: config.json's copies count only without a generation_config.json
    config = {"model_type": "marian", "num_beams": 6}
    assert generation_defaults(Checkpoint(tmp_path, config, {"num_beams": 2}), pad_id=9).beam_size == 2
    assert generation_defaults(Checkpoint(tmp_path, config, {}), pad_id=9).beam_size == 1
    assert generation_defaults(Checkpoint(tmp_path, config, None), pad_id=9).beam_size == 6
    # Marian's pad token is banned when the checkpoint names no bad words
    assert generation_defaults(Checkpoint(tmp_path, config, {}), pad_id=9).bad_words_ids == [[9]]
    with pytest.raises(ConversionError, match="early_stopping='never'"):
        generation_defaults(Checkpoint(tmp_path, {}, {"early_stopping": "never"}), pad_id=0)


def test_cli_quantize_int8(t5_dir, tmp_path, capsys):
    repo = tmp_path / "models"
    args = ["--from-hf", str(t5_dir), "--name", "t5-int8", "--task", "summarize", "--out-repo", str(repo)]
    assert export_main([*args, "--quantize", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    manifest = load_manifest(repo / "t5-int8")  # verifies the updated hashes
    assert manifest.quantization == "int8"
    assert manifest.architecture == "t5"
    for graph in ("encoder.onnx", "decoder.onnx"):
        ops = {node.op_type for node in onnx.load(str(repo / "t5-int8" / graph)).graph.node}
        assert "MatMulInteger" in ops, graph
        assert "DynamicQuantizeLinear" in ops, graph
    initializers = onnx.load(str(repo / "t5-int8" / "decoder.onnx")).graph.initializer
    int8_weights = [i for i in initializers if i.data_type == onnx.TensorProto.INT8]  # signed (service/cpu.py)
    assert int8_weights and all(np.prod(i.dims) > 1 for i in int8_weights)


def test_sharded_safetensors(t5_dir, tmp_path):
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(t5_dir))
    sharded = shutil.copytree(t5_dir, tmp_path / "hf")
    (sharded / "model.safetensors").unlink()
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ours, reference = build_model(convert(sharded)), build_model(convert(t5_dir))
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    return hf_builders.marian(tmp_path_factory.mktemp("marian") / "hf", steps=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decoder_vocab_size": 7}, r"decoder_vocab_size \(7\) differs from vocab_size"),
        ({"decoder_attention_heads": 2}, r"encoder_attention_heads \(4\) differs from decoder_attention_heads \(2\)"),
        ({"activation_function": "mish"}, r"activation 'mish' is not supported"),
    ],
)
def test_inexpressible_configs_are_refused(marian_dir, tmp_path, change, message):
    """heed refuses what it could only approximate instead of exporting a model that differs."""
    broken = shutil.copytree(marian_dir, tmp_path / "hf")
    config = json.loads((broken / "config.json").read_text()) | change
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=message):
        convert(broken)


def test_marian_with_separate_vocabularies_is_refused(marian_dir, tmp_path):
    broken = shutil.copytree(marian_dir, tmp_path / "hf")
    shutil.copy(broken / "vocab.json", broken / "target_vocab.json")
    with pytest.raises(ConversionError, match="separate source and target vocabularies"):
        convert(broken)
