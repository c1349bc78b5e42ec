"""Bad input to the runtime raises one error type, `RequestError`, with a message; nothing crashes."""

from __future__ import annotations

import json
import shutil

import pytest

from service.engine import Engine
from service.errors import InputTooLong, InvalidInput, InvalidOptions, ModelLoadError, RequestError
from service.manifest import load_manifest


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return Engine(tiny_dir)


@pytest.mark.parametrize(
    ("texts", "options", "kind", "words"),
    [
        ([], None, InvalidInput, "no input"),
        ([""], None, InvalidInput, "empty"),
        (["ok", "   "], None, InvalidInput, "input text 1 is empty"),
        (["ok"], {"bogus": 1}, InvalidOptions, "bogus"),
        (["ok"], {"max_new_tokens": 0}, InvalidOptions, "max_new_tokens"),
        (["ok"], {"max_new_tokens": 10**6}, InvalidOptions, "limit"),
        (["ok"], {"temperature": -1}, InvalidOptions, "temperature"),
        (["ok"], {"top_p": 1.5}, InvalidOptions, "top_p"),
        (["ok"], {"top_k": "many"}, InvalidOptions, "top_k"),
        (["ok"], {"beam_size": 100}, InvalidOptions, "beam_size"),
        (["ok"], {"beam_size": 2, "do_sample": True}, InvalidOptions, "sampling"),
        (["ok"], {"min_new_tokens": 9, "max_new_tokens": 3}, InvalidOptions, "min_new_tokens"),
        (["ok"], {"temperature": float("nan"), "do_sample": True}, InvalidOptions, "temperature"),
        (["ok"], {"length_penalty": float("inf")}, InvalidOptions, "length_penalty"),
    ],
)
def test_bad_input_raises_request_error(engine, texts, options, kind, words):
    with pytest.raises(kind) as info:
        engine.prepare(texts, options)
    assert isinstance(info.value, RequestError)
    assert words in info.value.message
    assert engine.cache.used == 0 and not engine.running


def test_unknown_target_language(engine):
    with pytest.raises(InvalidOptions, match="not one of this model's languages: de, es, fr"):
        engine.prepare(["ok"], target_lang="xx")


def test_too_long_input_is_refused_or_truncated(engine):
    limit = engine.manifest.limits.max_input_tokens
    text = "one two three " * limit
    with pytest.raises(InputTooLong, match=f"at most {limit}"):
        engine.prepare([text])
    (seq,) = engine.prepare([text], truncate=True)
    assert len(seq.input_ids) == limit and seq.input_ids[-1] == engine.manifest.special_tokens.eos_id
    assert engine.generate([text], {"max_new_tokens": 3}, truncate=True)[0].output_tokens <= 3


def test_invalid_manifest_is_refused_naming_the_field(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["spec"]["n_heads"] = 3
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="field 'spec'"):
        load_manifest(broken)
    manifest["spec"]["n_heads"] = "four"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="field 'spec.n_heads'"):
        load_manifest(broken)


def test_corrupt_graph_is_refused_by_its_hash(tiny_dir, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, broken)
    with (broken / "decoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelLoadError, match="decoder.onnx does not match its sha256"):
        Engine(broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="missing file tokenizer.json"):
        load_manifest(broken)
