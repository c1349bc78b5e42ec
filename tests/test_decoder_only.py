"""Decoder-only models through heed's runtime (prefill, then the step loop shared with seq2seq
models) against references: full recomputation in PyTorch, each prompt decoded alone, and the
decoding options of seq2seq models (sampling, beams, stop strings, min/max tokens, penalties)."""

from __future__ import annotations

import json

import pytest
import torch

from export.decoder_model import DecoderOnlyModel
from export.demo import tokenizer
from export.package import write_model_dir
from service.engine import Engine
from service.errors import InputTooLong, InvalidOptions, ModelLoadError
from service.manifest import ModelSpec, SpecialTokens, load_manifest
from service.settings import EngineConfig

PROMPTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "one",
    "a long report about the weather in the mountains and the sea, with numbers like 12 and 345",
    "six seven",
    "how are you today?",
]
CONTEXT = 48
SPECS = {
    "llama-like": dict(
        n_kv_heads=2,
        activation="silu",
        gated_ffn=True,
        norm="rmsnorm",
        positions="rotary",
        rotary={"theta": 100.0},
        out_bias=False,
        ffn_bias=False,
    ),
    "gpt2-like-window": dict(
        positions="learned", activation="gelu_tanh", decoder={"layers": 2, "attention": {"kind": "local", "window": 5}}
    ),
}


def decoder_spec(**overrides) -> ModelSpec:
    base = dict(
        vocab_size=tokenizer().get_vocab_size(),
        d_model=32,
        n_heads=4,
        d_ff=48,
        encoder=None,
        decoder={"layers": 2, "attention": {"kind": "causal"}},
        pre_norm=True,
        final_norm=True,
        tie_lm_head=False,
        max_positions=CONTEXT,
    )
    return ModelSpec.model_validate(base | overrides)


@pytest.fixture(scope="module", params=sorted(SPECS))
def built(request, tmp_path_factory):
    torch.manual_seed(0)
    model = DecoderOnlyModel(decoder_spec(**SPECS[request.param])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("decoder-only") / request.param
    special = SpecialTokens(pad_id=0, eos_id=1, extra_eos_ids=[5], unk_id=2)
    write_model_dir(
        model, tokenizer(), directory, name="lm", task="generate", architecture="heed", special_tokens=special
    )
    return model, Engine(directory, EngineConfig(kv_rows=16, intra_op_threads=1))


def torch_greedy(model: DecoderOnlyModel, prompt: list[int], max_new: int) -> list[int]:
    """Greedy decoding by full recomputation: the whole sequence through PyTorch, every step."""
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(torch.tensor([sequence]))[0, -1].argmax())
            if token in (1, 5):
                break
            sequence.append(token)
    return sequence[len(prompt) :]


def test_cached_decoding_equals_full_recomputation(built):
    model, engine = built
    for prompt in PROMPTS:
        ids = engine.prepare([prompt])[0].input_ids
        assert engine.generate([prompt], {"max_new_tokens": 12})[0].token_ids == torch_greedy(model, ids, 12), prompt


@pytest.mark.parametrize(
    "options", [{"max_new_tokens": 12}, {"max_new_tokens": 12, "beam_size": 3}], ids=["greedy", "beam3"]
)
def test_batched_equals_alone(built, options):
    _, engine = built
    together = engine.generate(PROMPTS, options)
    for prompt, result in zip(PROMPTS, together):
        assert result.token_ids == engine.generate([prompt], options)[0].token_ids, prompt
    assert engine.cache.used == 0


def test_prompts_joining_a_running_batch_decode_as_alone(built):
    """Continuous batching: each prompt is prefilled a few steps after the previous one, greedy
    and beam searches side by side, rows at different positions of the same cache."""
    _, engine = built
    options = {"max_new_tokens": 10, "min_new_tokens": 10}
    greedy = engine.prepare(PROMPTS[:3], options)
    beams = engine.prepare(PROMPTS[3:], options | {"beam_size": 2})
    pending = [s for pair in zip(greedy, beams) for s in pair]
    while pending or engine.running:
        if pending:
            engine.admit([pending.pop(0)])
        engine.step()
    for seq, prompt, beam in zip([*greedy, *beams], PROMPTS, [1] * 3 + [2] * 3):
        alone = engine.generate([prompt], options | ({"beam_size": 2} if beam > 1 else {}))[0]
        assert seq.result.token_ids == alone.token_ids, prompt


def test_sampling_is_reproducible_by_seed(built):
    _, engine = built
    options = {"max_new_tokens": 16, "min_new_tokens": 16, "temperature": 1.5}
    first = [r.token_ids for r in engine.generate(PROMPTS, options | {"seed": 7})]
    assert first == [r.token_ids for r in engine.generate(PROMPTS, options | {"seed": 7})]
    assert first != [r.token_ids for r in engine.generate(PROMPTS, options | {"seed": 8})]
    assert engine.generate(PROMPTS[:1], options | {"seed": 7})[0].token_ids == first[0]  # seeded per input


def test_min_and_max_new_tokens_and_every_eos(built):
    """min_new_tokens bans each EOS token (both of this model's); max_new_tokens ends with `length`."""
    _, engine = built
    results = engine.generate(PROMPTS, {"max_new_tokens": 9, "min_new_tokens": 9})
    assert all(r.output_tokens == 9 and r.finish_reason == "length" for r in results)
    assert not {1, 5} & {t for r in results for t in r.token_ids}


def test_stop_strings_and_repetition_penalty(built):
    _, engine = built
    options = {"max_new_tokens": 12, "min_new_tokens": 12}
    plain = engine.generate(PROMPTS[:1], options)[0]
    stop = plain.text.strip().split()[1]
    stopped = engine.generate(PROMPTS[:1], options | {"stop": [stop]})[0]
    assert stopped.finish_reason == "stop" and stop not in stopped.text and plain.text.startswith(stopped.text)
    penalized = engine.generate(PROMPTS, {"max_new_tokens": 12, "repetition_penalty": 5.0})
    assert [r.token_ids for r in penalized] != [r.token_ids for r in engine.generate(PROMPTS, {"max_new_tokens": 12})]
    for result, prompt in zip(penalized, PROMPTS):
        assert (
            result.token_ids
            == engine.generate([prompt], {"max_new_tokens": 12, "repetition_penalty": 5.0})[0].token_ids
        )


def test_the_context_bounds_prompt_and_output(built):
    """Prompt and output share the model's positions: an output stops at the end of the context
    (`length`, never a failed step), and a prompt that leaves no room is refused."""
    _, engine = built
    assert engine.manifest.limits.max_input_tokens == CONTEXT - 1
    long = " ".join(["one two three four five six seven eight nine ten"] * 3)
    ids = engine.prepare([long])[0].input_ids
    assert CONTEXT - 20 < len(ids) < CONTEXT - 1
    result = engine.generate([long], {"max_new_tokens": 40, "min_new_tokens": 40})[0]
    assert result.finish_reason == "length" and len(ids) + result.output_tokens == CONTEXT
    with pytest.raises(InputTooLong, match="at most 47"):
        engine.generate([long * 2], {"max_new_tokens": 4})


def test_alignment_is_refused(built):
    _, engine = built
    with pytest.raises(InvalidOptions, match="cross-attention"):
        engine.generate(PROMPTS[:1], {"max_new_tokens": 2}, return_alignment=True)


def test_manifest_of_a_decoder_only_model_is_checked(built, tmp_path):
    _, engine = built
    manifest = json.loads((engine.directory / "manifest.json").read_text())
    assert manifest["spec"]["encoder"] is None and manifest["files"]["encoder"] is None
    assert not (engine.directory / "encoder.onnx").exists()
    for change, message in (
        ({"files": manifest["files"] | {"encoder": "encoder.onnx"}}, "no encoder graph"),
        ({"limits": {"max_input_tokens": CONTEXT, "max_output_tokens": 4}}, "leave room"),
    ):
        directory = tmp_path / message.replace(" ", "-")
        directory.mkdir()
        (directory / "manifest.json").write_text(json.dumps(manifest | change))
        with pytest.raises(ModelLoadError, match=message):
            load_manifest(directory)
