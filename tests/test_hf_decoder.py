"""Importing decoder-only Hugging Face checkpoints: heed must compute and generate exactly what
transformers does.

Tiny GPT-2, Llama (grouped K/V heads, Llama 3.1 RoPE scaling, untied head; and, for the logits and
outputs, the same with linear RoPE scaling), Qwen2 (one K/V head, Q/K/V biases, tied head, two EOS
tokens) and Mistral (a sliding window shorter than the prompts) checkpoints are built locally
(tests/hf_builders.py) and exported with `heed export --from-hf --task generate`; a batch of prompts
of different lengths is decoded by heed's engine (prefill, then the step loop) and by transformers'
`generate` (left-padded, with an attention mask).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer

from export.cli import main as export_main
from export.parity import Parity
from service import graph
from service.chat import render_chat
from service.engine import Engine, build_sequences
from service.manifest import load_manifest
from service.options import GenerationOptions
from service.settings import EngineConfig
from service.validation import RawRequest, validate
from tests import hf_builders

transformers = pytest.importorskip("transformers")

MAX_NEW_TOKENS = 20
BUILDERS = {
    "gpt2": hf_builders.gpt2,
    "llama": hf_builders.llama,
    "qwen2": hf_builders.qwen2,
    "mistral": hf_builders.mistral,
    # linear RoPE scaling (positions interpolated by `factor`): only its numerics differ from llama's
    "llama-linear": functools.partial(
        hf_builders.llama, rope={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}
    ),
}
ARCHITECTURES = ["gpt2", "llama", "qwen2", "mistral"]  # tokenizers, templates, texts: llama-linear is llama's
PROMPTS = hf_builders.prompts(12)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """architecture -> (architecture, HF checkpoint dir, heed model dir), built and exported through
    the CLI once per module, for the parametrized tests and the single-architecture ones alike."""
    done: dict[str, tuple[str, Path, Path]] = {}

    def get(arch: str) -> tuple[str, Path, Path]:
        if arch not in done:
            root = tmp_path_factory.mktemp(arch)
            hf_dir = BUILDERS[arch](root / "hf")
            args = ["--from-hf", str(hf_dir), "--name", arch, "--task", "generate", "--out-repo", str(root)]
            assert export_main(args) == 0
            done[arch] = arch, hf_dir, root / arch
        return done[arch]

    return get


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, export):
    """(architecture, HF checkpoint dir, heed model dir)."""
    return export(request.param)


@pytest.fixture(scope="module", params=list(BUILDERS))
def computed(request, export):
    """`exported`, and also the checkpoints that differ only in what the graph computes."""
    return export(request.param)


def hf_model(hf_dir: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()


def hf_tokenizer(hf_dir: Path):
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def cut(rows: list[list[int]], eos: list[int]) -> list[list[int]]:
    """Outputs without the EOS that ended them (and the padding after it)."""
    return [row[: min([row.index(e) for e in eos if e in row], default=len(row))] for row in rows]


def transformers_generate(hf_dir: Path, texts: list[str], **options) -> list[list[int]]:
    tok, model = hf_tokenizer(hf_dir), hf_model(hf_dir)
    batch = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, pad_token_id=tok.pad_token_id, **options)
    eos = model.generation_config.eos_token_id
    return cut(out[:, batch.input_ids.shape[1] :].tolist(), eos if isinstance(eos, list) else [eos])


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_is_token_identical_to_transformers(computed, beams):
    arch, hf_dir, model_dir = computed
    engine = Engine(model_dir, EngineConfig(kv_rows=len(PROMPTS) * beams, intra_op_threads=1))
    options = {"beam_size": beams, "max_new_tokens": MAX_NEW_TOKENS}
    sequences = engine.prepare(PROMPTS, options)
    engine.admit(sequences)  # all prompts prefilled in one pass, then decoded together
    assert engine.cache.free == 0
    while engine.running:
        engine.step()
    ours = [s.result.token_ids for s in sequences]
    theirs = transformers_generate(hf_dir, PROMPTS, num_beams=beams, max_new_tokens=MAX_NEW_TOKENS)
    lengths = sorted({len(t) for t in theirs})
    print(f"{arch} beams={beams}: output lengths {lengths}")
    assert ours == theirs
    assert len(lengths) > 2, "outputs should vary in length (some end with EOS) to test finishing"


def onnx_logits(model_dir: Path, ids: np.ndarray) -> np.ndarray:
    """Every position's logits of right-padded prompts, from the exported graph in one pass."""
    spec = load_manifest(model_dir).spec
    session = ort.InferenceSession(str(model_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    positions = np.arange(ids.shape[1])[None, :].repeat(len(ids), 0)
    empty = np.zeros((len(ids), spec.kv_heads, ids.shape[1], spec.head_dim), np.float32)  # room for the prompts
    feeds = dict(zip(graph.DECODER_ONLY_INPUTS, (ids, positions, positions)))
    feeds |= dict.fromkeys(graph.past_inputs(spec.decoder.layers), empty)
    feeds |= dict(zip(graph.CHOICE_INPUTS, (np.array([1]), np.array([False]))))
    return session.run([graph.LOGITS], feeds)[0]


def test_logits_match_transformers(computed):
    arch, hf_dir, model_dir = computed
    tok = hf_tokenizer(hf_dir)
    batch = tok(PROMPTS[:6], return_tensors="np", padding=True, padding_side="right")
    with torch.no_grad():
        reference = hf_model(hf_dir)(
            input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(batch["attention_mask"])
        ).logits.numpy()
    ours = onnx_logits(model_dir, batch["input_ids"].astype(np.int64))
    real = batch["attention_mask"].astype(bool)
    parity = Parity.of(ours[real], reference[real])
    print(f"{arch}: ONNX vs transformers: {parity}")
    assert parity.within()


def test_cached_decoding_equals_full_recomputation(exported):
    """heed's greedy output (prefill and cached steps) is what transformers' uncached forward pass
    chooses when it recomputes the whole sequence for every token."""
    _, hf_dir, model_dir = exported
    engine = Engine(model_dir, EngineConfig(kv_rows=4, intra_op_threads=1))
    model = hf_model(hf_dir)
    eos = engine.manifest.eos_ids
    for prompt in PROMPTS[:4]:
        ids = engine.prepare([prompt])[0].input_ids
        sequence = list(ids)
        with torch.no_grad():
            while len(sequence) - len(ids) < 12:
                token = int(model(torch.tensor([sequence]), use_cache=False).logits[0, -1].argmax())
                if token in eos:
                    break
                sequence.append(token)
        assert engine.generate([prompt], {"max_new_tokens": 12})[0].token_ids == sequence[len(ids) :], prompt


def test_tokenizer_and_chat_template_are_the_checkpoints(exported):
    arch, hf_dir, model_dir = exported
    ours, theirs = Tokenizer.from_file(str(model_dir / "tokenizer.json")), hf_tokenizer(hf_dir)
    for text in [*PROMPTS, *hf_builders.inputs(8), "  Spaces  and UPPER case 1234 ?"]:
        ids = theirs(text).input_ids
        assert ours.encode(text).ids == ids, text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    chat = load_manifest(model_dir).chat
    if arch in ("gpt2", "mistral"):
        assert chat is None
        return
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    messages.append({"role": "user", "content": "how are you"})
    expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = render_chat(chat.template, messages, chat.tokens)
    assert prompt == expected
    assert chat.tokens["eos_token"] == theirs.eos_token
    # the rendered prompt holds its special tokens (Llama's BOS): tokenized without adding them again
    engine = Engine(model_dir, EngineConfig(kv_rows=1, intra_op_threads=1))
    raw = RawRequest([prompt], special_tokens=False)
    [ids] = validate(raw, engine.manifest, engine.codec, engine.limits).inputs
    tokenized = theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert ids == list(getattr(tokenized, "input_ids", tokenized))


def test_output_text_continues_the_prompt(exported):
    """A continuation's text is what it adds to the prompt's, streamed or not: a first token that
    starts a word keeps its space, also where SentencePiece drops it at the start of a decoded
    string (Llama, Mistral)."""
    _, hf_dir, model_dir = exported
    engine = Engine(model_dir, EngineConfig(kv_rows=8, intra_op_threads=1))
    tok = hf_tokenizer(hf_dir)
    results = engine.generate(PROMPTS, {"max_new_tokens": 6})
    for prompt, result in zip(PROMPTS, results):
        ids = tok(prompt).input_ids
        whole = tok.decode(ids + result.token_ids, skip_special_tokens=True)
        assert whole == tok.decode(ids, skip_special_tokens=True) + result.text
        streamed: list[str] = []
        raw = RawRequest([prompt], GenerationOptions(max_new_tokens=6), stream=True)
        valid = validate(raw, engine.manifest, engine.codec, engine.limits)
        on_token = lambda _, text, out=streamed: out.append(text)  # noqa: E731
        [sequence] = build_sequences(valid, engine.manifest, engine.codec, on_token)
        engine.admit([sequence])
        while engine.running:
            engine.step()
        assert "".join(streamed) == sequence.result.text == result.text
    assert sum(r.text.startswith(" ") for r in results) > len(results) / 2


def test_generation_config_is_followed(export, tmp_path):
    """The checkpoint's repetition penalty and no-repeat n-grams (which see the prompt, as in
    transformers) with no request options; each prompt is compared alone, without padding. One
    architecture suffices: the logits processors are shared."""
    _, hf_dir, _ = export("llama")
    tuned = shutil.copytree(hf_dir, tmp_path / "hf")
    config = json.loads((tuned / "generation_config.json").read_text())
    config |= {"repetition_penalty": 1.6, "no_repeat_ngram_size": 2, "max_length": 50, "max_new_tokens": 15}
    (tuned / "generation_config.json").write_text(json.dumps(config))
    assert (
        export_main(["--from-hf", str(tuned), "--name", "tuned", "--task", "generate", "--out-repo", str(tmp_path)])
        == 0
    )
    engine = Engine(tmp_path / "tuned", EngineConfig(kv_rows=8, intra_op_threads=1))
    defaults = engine.manifest.generation
    assert (defaults.max_new_tokens, defaults.repetition_penalty, defaults.no_repeat_ngram_size) == (15, 1.6, 2)
    ours = [g.token_ids for g in engine.generate(PROMPTS[:8])]
    theirs = [transformers_generate(tuned, [p])[0] for p in PROMPTS[:8]]
    plain = [g.token_ids for g in engine.generate(PROMPTS[:8], {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0})]
    assert ours == theirs and ours != plain


def test_several_eos_tokens_end_outputs(export):
    """Qwen2.5-style: generation_config's EOS list (the Qwen2 checkpoint's); the model ends with the
    second one."""
    _, _, model_dir = export("qwen2")
    manifest = load_manifest(model_dir)
    engine = Engine(model_dir, EngineConfig(kv_rows=12, intra_op_threads=1))
    im_end, endoftext = (engine.codec.tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
    assert manifest.eos_ids == (im_end, endoftext) and manifest.special_tokens.pad_id == endoftext
    results = engine.generate(PROMPTS, {"max_new_tokens": MAX_NEW_TOKENS})
    assert any(r.finish_reason == "eos" for r in results)
