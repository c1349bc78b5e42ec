"""A checkpoint's sampling defaults (generation_config.json's do_sample, temperature, top_k, top_p)
become the manifest's and the decoding of requests that leave them out; a request's own options
win. Also `heed export --summarize-prompt`, which writes a decoder-only model's summarize prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.cli import main as export_main
from export.hf import export_checkpoint
from export.hf.base import TRANSFORMERS_TOP_K, Checkpoint, ConversionError, generation_defaults
from service.engine import Engine
from service.errors import InvalidOptions
from service.manifest import GenerationDefaults, Manifest
from service.options import GenerationOptions
from service.settings import EngineConfig
from service.validation import ModelLimits, resolve
from tests import hf_builders

LIMITS = ModelLimits(max_input_tokens=64, max_output_tokens=64, max_beam_size=8, kv_rows=16)
QWEN = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05}
LLAMA3 = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}


def defaults_of(generation: dict | None, config: dict | None = None) -> GenerationDefaults:
    return generation_defaults(Checkpoint(Path("ckpt"), config or {}, generation), pad_id=0)


def test_a_sampling_generation_config_becomes_the_manifests_defaults():
    qwen = defaults_of(QWEN)
    assert (qwen.do_sample, qwen.temperature, qwen.top_k, qwen.top_p, qwen.repetition_penalty) == (
        True,
        0.7,
        20,
        0.8,
        1.05,
    )
    # no top_k named: transformers' generate samples with its global default
    llama = defaults_of(LLAMA3)
    assert (llama.do_sample, llama.temperature, llama.top_k, llama.top_p) == (True, 0.6, TRANSFORMERS_TOP_K, 0.9)


def test_a_greedy_generation_config_keeps_its_sampling_settings_for_requests_that_sample():
    """do_sample false: greedy by default, as transformers ignores temperature and top_p then;
    a request that asks to sample gets them, as `generate(do_sample=True)` does."""
    greedy = defaults_of({"temperature": 0.6, "top_p": 0.9})
    assert (greedy.do_sample, greedy.temperature, greedy.top_p) == (False, 0.6, 0.9)
    assert not resolve(GenerationOptions(), greedy, LIMITS).sample
    asked = resolve(GenerationOptions(do_sample=True), greedy, LIMITS)
    assert (asked.sample, asked.temperature, asked.top_p) == (True, 0.6, 0.9)
    # a greedy config's temperature 0 says nothing about sampling and is left out
    assert defaults_of({"do_sample": False, "temperature": 0.0}).temperature == 1.0


def test_without_a_generation_config_the_model_config_is_read():
    old = defaults_of(None, {"do_sample": True, "temperature": 0.5, "top_k": 0})
    assert (old.do_sample, old.temperature, old.top_k) == (True, 0.5, 0)
    assert not defaults_of(None).do_sample


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ({"do_sample": True, "num_beams": 4}, "beam sampling"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
    ],
)
def test_sampling_heed_cannot_do_is_refused_at_conversion(generation, message):
    with pytest.raises(ConversionError, match=message):
        defaults_of(generation)


def test_a_request_without_options_samples_with_the_models_defaults():
    cfg = resolve(GenerationOptions(), defaults_of(QWEN), LIMITS)
    assert (cfg.sample, cfg.temperature, cfg.top_k, cfg.top_p, cfg.beam_size) == (True, 0.7, 20, 0.8, 1)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"temperature": 1.3}, (True, 1.3, 20, 0.8, 1)),
        ({"top_p": 0.5, "top_k": 0}, (True, 0.7, 0, 0.5, 1)),
        ({"temperature": 0}, (False, 0, 20, 0.8, 1)),  # OpenAI's greedy
        ({"do_sample": False}, (False, 0.7, 20, 0.8, 1)),
        ({"beam_size": 3}, (False, 0.7, 20, 0.8, 3)),  # beams asked: no sampling default in the way
    ],
)
def test_a_requests_own_options_win_over_the_models_sampling_defaults(options, expected):
    cfg = resolve(GenerationOptions(**options), defaults_of(QWEN), LIMITS)
    assert (cfg.sample, cfg.temperature, cfg.top_k, cfg.top_p, cfg.beam_size) == expected


def test_asking_for_beams_and_sampling_together_is_still_refused():
    with pytest.raises(InvalidOptions, match="beam search cannot be combined with sampling"):
        resolve(GenerationOptions(do_sample=True, beam_size=3), defaults_of(QWEN), LIMITS)


def test_a_manifest_written_before_the_sampling_fields_decodes_as_before():
    old = {"max_new_tokens": 20, "beam_size": 1, "length_penalty": 1.0, "bad_words_ids": [[0]]}
    defaults = GenerationDefaults.model_validate(old)
    assert (defaults.do_sample, defaults.temperature, defaults.top_k, defaults.top_p) == (False, 1.0, 0, 1.0)
    plain = resolve(GenerationOptions(), defaults, LIMITS)
    assert not plain.sample and plain.max_new_tokens == 20
    sampled = resolve(GenerationOptions(temperature=0.8), defaults, LIMITS)
    assert (sampled.sample, sampled.temperature, sampled.top_k, sampled.top_p) == (True, 0.8, 0, 1.0)


def test_a_hand_written_manifest_cannot_ask_for_beam_sampling():
    with pytest.raises(ValueError, match="beam sampling"):
        GenerationDefaults(do_sample=True, beam_size=2)


# -- end to end: a tiny GPT-2 whose generation config samples -------------------------------------

PROMPT = "In short: {text}\nSummary:"


@pytest.fixture(scope="module")
def sampling_gpt2(tmp_path_factory) -> Path:
    """An untrained tiny GPT-2 (its flat logits make sampled outputs differ by seed), exported
    with a sampling generation config and a summarize prompt."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("sampling-gpt2")
    hf_dir = hf_builders.gpt2(root / "hf", steps=0, do_sample=True, temperature=1.5, top_k=40, top_p=0.95)
    args = ["--from-hf", str(hf_dir), "--name", "m", "--task", "generate", "--out-repo", str(root / "repo")]
    assert export_main([*args, "--summarize-prompt", PROMPT]) == 0
    return root / "repo" / "m"


def test_an_exported_checkpoint_samples_by_default_and_greedy_when_asked(sampling_gpt2):
    manifest = json.loads((sampling_gpt2 / "manifest.json").read_text())
    sampling = {k: manifest["generation"][k] for k in ("do_sample", "temperature", "top_k", "top_p")}
    assert sampling == {"do_sample": True, "temperature": 1.5, "top_k": 40, "top_p": 0.95}
    assert manifest["summarize_prompt"] == PROMPT
    engine = Engine(sampling_gpt2, EngineConfig(kv_rows=4, intra_op_threads=1))
    prompts = ["the quick brown fox"]
    sampled = [engine.generate(prompts, {"seed": seed, "max_new_tokens": 8})[0].token_ids for seed in range(4)]
    assert len({tuple(s) for s in sampled}) > 1
    again = engine.generate(prompts, {"seed": 0, "max_new_tokens": 8})[0].token_ids
    assert again == sampled[0]
    greedy = [engine.generate(prompts, {"seed": s, "temperature": 0, "max_new_tokens": 8})[0].token_ids for s in (0, 1)]
    assert greedy[0] == greedy[1] == engine.generate(prompts, {"do_sample": False, "max_new_tokens": 8})[0].token_ids


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--summarize-prompt", "Summarize:"], "must contain {text}"),
        (["--task", "summarize", "--summarize-prompt", "{text}"], "exported with --task generate"),
    ],
)
def test_a_summarize_prompt_is_checked_before_anything_is_exported(tmp_path, capsys, extra, message):
    args = ["--from-hf", str(tmp_path / "hf"), "--name", "m", "--task", "generate", "--out-repo", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        export_main([*args, *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_summarize_prompt_needs_from_hf(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_main(["--config", "c.json", "--tokenizer", "t.json", "--summarize-prompt", "{text}", "--out-repo", "x"])
    assert "--summarize-prompt goes with --from-hf" in capsys.readouterr().err


def test_a_manifests_summarize_prompt_must_place_the_text(sampling_gpt2):
    manifest = json.loads((sampling_gpt2 / "manifest.json").read_text())
    with pytest.raises(ValueError, match="summarize_prompt must contain"):
        Manifest.model_validate(manifest | {"summarize_prompt": "Summarize this."})


def test_a_summarize_prompt_is_refused_for_an_encoder_decoder_checkpoint(tmp_path):
    """A seq2seq summarizer reads the text itself: a prompt would never be used."""
    hf_dir = hf_builders.marian(tmp_path / "hf", steps=0)
    with pytest.raises(ConversionError, match="for decoder-only checkpoints"):
        export_checkpoint(hf_dir, tmp_path / "m", name="m", task="generate", summarize_prompt="{text}")
    assert not (tmp_path / "m").exists()
