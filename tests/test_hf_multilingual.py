"""Multilingual checkpoints: M2M100, NLLB-200 (also with `legacy_behaviour`) and a MADLAD-style
T5 must translate exactly as transformers does, with the source and target languages placed as
their tokenizers place them; and a T5 whose logits are in the thousands must pass the export's
parity check (it scales with the logits) and generate what transformers generates.

Each checkpoint is built here (tests/hf_multilingual.py), exported with `heed export --from-hf`
and compared with transformers on the exported graphs: logits, greedy and beam-4 outputs for a
padded batch of 24 inputs of different lengths, the tokenizer on 86 texts, and int8 against fp32.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from export.cli import main as export_main
from export.parity import Parity
from export.quantize import quantize_model_dir
from service.engine import Engine
from service.errors import InvalidOptions
from service.manifest import load_manifest
from service.settings import EngineConfig
from tests import hf_builders, hf_multilingual
from tests.http_server import offline, running
from tests.test_hf_import import MAX_NEW_TOKENS, onnx_logits

transformers = pytest.importorskip("transformers")


@dataclass(frozen=True)
class Case:
    """A checkpoint and one translation direction, as heed names it and as transformers is given it."""

    builder: str
    target: str  # heed's target_lang (a code the model lists, or one that `match` resolves)
    source: str | None  # heed's source_lang
    hf_source: str | None = None  # the tokenizer's src_lang, for checkpoints that mark the source
    hf_target: str | None = None  # the forced first token (None: the target is a source prefix)
    hf_prefix: str = ""  # text the HF tokenizer needs in front for the same ids (MADLAD's tag)
    legacy: bool = False  # NLLB's legacy_behaviour: the source tag after EOS


CASES = {
    "m2m100": Case("m2m100", "fr", "de", hf_source="de", hf_target="__fr__"),
    "nllb": Case("nllb", "de", "fra_Latn", hf_source="fra_Latn", hf_target="deu_Latn"),
    "nllb-legacy": Case("nllb", "fra_Latn", "en", hf_source="eng_Latn", hf_target="fra_Latn", legacy=True),
    "madlad": Case("madlad", "fr", None, hf_prefix="<2fr> "),
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Each builder's checkpoint, built once for every case that uses it."""
    root = tmp_path_factory.mktemp("hf")
    return {name: getattr(hf_multilingual, name)(root / name) for name in sorted({c.builder for c in CASES.values()})}


@pytest.fixture(scope="module")
def export(checkpoints, tmp_path_factory):
    """case name -> (case, HF checkpoint dir, heed model dir), exported once per module."""
    done: dict[str, tuple[Case, Path, Path]] = {}

    def get(name: str) -> tuple[Case, Path, Path]:
        if name not in done:
            case = CASES[name]
            root = tmp_path_factory.mktemp(name)
            hf_dir = checkpoints[case.builder]
            if case.legacy:
                hf_dir = shutil.copytree(hf_dir, root / "hf")
                config = json.loads((hf_dir / "tokenizer_config.json").read_text())
                (hf_dir / "tokenizer_config.json").write_text(json.dumps(config | {"legacy_behaviour": True}))
            args = ["--from-hf", str(hf_dir), "--name", "m", "--task", "translate", "--out-repo", str(root)]
            assert export_main(args) == 0
            done[name] = case, hf_dir, root / "m"
        return done[name]

    return get


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, export):
    """(case, HF checkpoint dir, heed model dir)."""
    return export(request.param)


@pytest.fixture(scope="module", params=[name for name, case in CASES.items() if not case.legacy])
def distinct_graphs(request, export):
    """`exported` without nllb-legacy, whose graphs are nllb's (only the source tag moves)."""
    return export(request.param)


def hf_tokenizer(case: Case, hf_dir: Path):
    kwargs = {"src_lang": case.hf_source} if case.hf_source else {}
    return transformers.AutoTokenizer.from_pretrained(str(hf_dir), **kwargs)


def hf_generate(case: Case, hf_dir: Path, texts: list[str], eos: int, **options) -> list[list[int]]:
    tok = hf_tokenizer(case, hf_dir)
    batch = tok([case.hf_prefix + t for t in texts], return_tensors="pt", padding=True)
    forced = {"forced_bos_token_id": tok.convert_tokens_to_ids(case.hf_target)} if case.hf_target else {}
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **forced, **options)
    return [row[: row.index(eos)] if eos in row else row for row in out[:, 1:].tolist()]


def test_manifest_names_the_languages_and_where_they_go(exported):
    case, _, model_dir = exported
    tags = load_manifest(model_dir).languages
    if case.builder == "madlad":
        assert (tags.placement, tags.source_tag, sorted(tags.tokens)) == ("source_prefix", None, ["de", "fr"])
        return
    assert tags.placement == "decoder_forced" and tags.source_tag == ("after" if case.legacy else "before")
    assert len(tags.tokens) == (100 if case.builder == "m2m100" else 202)
    assert tags.default_source == ("en" if case.builder == "m2m100" else "eng_Latn")
    assert load_manifest(model_dir).source_languages == list(tags.tokens)


def test_logits_within_the_scaled_tolerance(exported):
    case, hf_dir, model_dir = exported
    tok = hf_tokenizer(case, hf_dir)
    batch = tok([case.hf_prefix + t for t in hf_builders.inputs(5)], return_tensors="np", padding=True)
    manifest = load_manifest(model_dir)
    decoder_ids = np.random.default_rng(0).integers(3, manifest.spec.vocab_size - 1, size=(5, 9))
    decoder_ids[:, 0] = manifest.special_tokens.decoder_start_id
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        reference = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            decoder_input_ids=torch.from_numpy(decoder_ids),
        ).logits.numpy()
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    parity = Parity.of(onnx_logits(model_dir, ids, mask, decoder_ids), reference)
    print(f"{case.builder}: {parity}")
    assert parity.within()


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_is_token_identical_to_transformers(exported, beams):
    case, hf_dir, model_dir = exported
    texts = hf_builders.inputs(24)
    engine = Engine(model_dir, EngineConfig(kv_rows=24 * beams, intra_op_threads=1))
    options = {"beam_size": beams, "max_new_tokens": MAX_NEW_TOKENS}
    ours = [g.token_ids for g in engine.generate(texts, options, target_lang=case.target, source_lang=case.source)]
    theirs = hf_generate(case, hf_dir, texts, engine.manifest.special_tokens.eos_id, num_beams=beams)
    lengths = sorted({len(t) for t in theirs})
    print(f"{case.builder} beams={beams}: output lengths {lengths}")
    assert ours == theirs
    assert len(lengths) > 1, "outputs should vary in length (some end with EOS) to test finishing"


def test_the_other_language_is_also_transformers(exported):
    """The case's languages swapped (or, for MADLAD, German): still identical, and not the same output."""
    case, hf_dir, model_dir = exported
    other = {
        "m2m100": Case("m2m100", "DE", "fr-CA", hf_source="fr", hf_target="__de__"),
        "nllb": Case("nllb", "fr", "deu_Latn", hf_source="deu_Latn", hf_target="fra_Latn"),
        "madlad": Case("madlad", "de", None, hf_prefix="<2de> "),
    }[case.builder]
    other = Case(**{**other.__dict__, "legacy": case.legacy})
    texts = hf_builders.inputs(12)
    engine = Engine(model_dir, EngineConfig(kv_rows=12, intra_op_threads=1))
    options = {"max_new_tokens": MAX_NEW_TOKENS}
    ours = [g.token_ids for g in engine.generate(texts, options, target_lang=other.target, source_lang=other.source)]
    assert ours == hf_generate(other, hf_dir, texts, engine.manifest.special_tokens.eos_id)
    usual = engine.generate(texts, options, target_lang=case.target, source_lang=case.source)
    assert ours != [g.token_ids for g in usual]


def test_tokenizer_round_trip_with_the_language_tags(exported):
    """heed's inputs (tokenizer.json plus the tags validation places) are transformers' ids, and
    decoding gives transformers' text, on 86 texts (one with characters the vocabulary lacks)."""
    case, hf_dir, model_dir = exported
    theirs = hf_tokenizer(case, hf_dir)
    texts = [*hf_builders.corpus(60, seed=7), *hf_builders.inputs(24), "  Spaces  and UPPER case 1234 ?", "Zürich ☃ ü"]
    engine = Engine(model_dir, EngineConfig(kv_rows=2, intra_op_threads=1))
    valid = engine.validate(texts, target_lang=case.target, source_lang=case.source)
    expected = theirs([case.hf_prefix + t for t in texts]).input_ids
    assert valid.inputs == expected
    ours = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tags = set(engine.manifest.languages.tokens.values())
    for text, ids in zip(texts, expected):
        ids = [i for i in ids if i not in tags]  # see below
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text
    # Forced language tokens decode to nothing, as transformers 4 decoded them (transformers 5's M2M100
    # tokenizer no longer counts them special and writes `__fr__` into the translation); MADLAD's
    # `<2xx>` are ordinary pieces, decoded as text by both.
    if engine.manifest.languages.placement != "decoder_forced":
        return
    tag = engine.manifest.languages.tokens[engine.manifest.languages.default_source]
    assert ours.decode([tag, *expected[0]], skip_special_tokens=True) == ours.decode(
        expected[0], skip_special_tokens=True
    )


def test_int8_greedy_agreement_with_fp32(distinct_graphs, tmp_path):
    """Reported, not promised: the share of inputs whose int8 greedy output equals fp32's; int8
    logits must stay close to fp32's (teacher-forced with fp32's outputs, on inputs with their
    language tags as the engine places them)."""
    case, _, model_dir = distinct_graphs
    quantized = shutil.copytree(model_dir, tmp_path / "int8")
    quantize_model_dir(quantized)
    texts = hf_builders.inputs(24)
    config, options = EngineConfig(kv_rows=24, intra_op_threads=1), {"max_new_tokens": MAX_NEW_TOKENS}
    engine = Engine(model_dir, config)
    fp32 = engine.generate(texts, options, target_lang=case.target, source_lang=case.source)
    int8 = Engine(quantized, config).generate(texts, options, target_lang=case.target, source_lang=case.source)
    share = sum(a.token_ids == b.token_ids for a, b in zip(fp32, int8)) / len(texts)
    rows = engine.validate(texts[:4], target_lang=case.target, source_lang=case.source).inputs
    tokens = engine.manifest.special_tokens
    width = max(len(r) for r in rows)
    ids = np.array([r + [tokens.pad_id] * (width - len(r)) for r in rows], dtype=np.int64)
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    decoder_ids = np.full((len(rows), 5), tokens.eos_id, dtype=np.int64)  # EOS after a short output
    for row, result in zip(decoder_ids, fp32):
        prefix = [tokens.decoder_start_id, *result.token_ids][:5]
        row[: len(prefix)] = prefix
    reference = onnx_logits(model_dir, ids, mask, decoder_ids)
    drift = float(np.abs(onnx_logits(quantized, ids, mask, decoder_ids) - reference).max())
    drift /= float(reference.std())
    print(
        f"{case.builder}: int8 greedy output equals fp32 on {share:.0%} of {len(texts)} inputs; drift {drift:.3f} std"
    )
    assert drift < 0.2


def test_languages_are_refused_with_the_choices(exported):
    case, _, model_dir = exported
    engine = Engine(model_dir, EngineConfig(kv_rows=2, intra_op_threads=1))
    with pytest.raises(InvalidOptions, match="target_lang 'xx' is not one of this model's languages"):
        engine.validate(["hello"], target_lang="xx", source_lang=case.source)
    if case.builder == "nllb":
        with pytest.raises(InvalidOptions, match="source_lang 'zh'"):  # zho_Hans or zho_Hant: ambiguous
            engine.validate(["hello"], target_lang=case.target, source_lang="zh")
        default = engine.validate(["hello"], target_lang=case.target)  # the tokenizer's src_lang: eng_Latn
        assert default.inputs == engine.validate(["hello"], target_lang=case.target, source_lang="en").inputs


def test_t5_with_logits_in_the_thousands_exports_and_generates_as_transformers(tmp_path):
    hf_dir = hf_multilingual.loud_t5(tmp_path / "hf")
    assert (
        export_main(["--from-hf", str(hf_dir), "--name", "loud", "--task", "summarize", "--out-repo", str(tmp_path)])
        == 0
    )
    model_dir = tmp_path / "loud"
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(hf_dir)).eval()
    texts = hf_builders.inputs(12)
    batch = tok(texts, return_tensors="pt", padding=True)
    decoder_ids = np.random.default_rng(1).integers(3, len(tok), size=(12, 6))
    decoder_ids[:, 0] = 0
    with torch.no_grad():
        reference = model(**batch, decoder_input_ids=torch.from_numpy(decoder_ids)).logits.numpy()
    ours = onnx_logits(model_dir, batch["input_ids"].numpy(), batch["attention_mask"].numpy(), decoder_ids)
    parity = Parity.of(ours, reference)
    print(f"loud T5: {parity}")
    assert parity.scale > 1000 and parity.within()
    engine = Engine(model_dir, EngineConfig(kv_rows=12 * 4, intra_op_threads=1))
    eos = engine.manifest.special_tokens.eos_id
    for beams in (1, 4):
        ours = [g.token_ids for g in engine.generate(texts, {"beam_size": beams, "max_new_tokens": 16})]
        with torch.no_grad():
            out = model.generate(**batch, num_beams=beams, max_new_tokens=16, do_sample=False)
        assert ours == [row[: row.index(eos)] if eos in row else row for row in out[:, 1:].tolist()], beams


def test_libretranslate_deepl_and_models_speak_iso_codes_to_nllb(checkpoints, tmp_path):
    """LibreTranslate's `target=de` and DeepL's `DE` reach NLLB's `deu_Latn`, the source `en` its
    `eng_Latn` tag; `/v1/models` names each code."""
    repo = tmp_path / "repo"
    assert (
        export_main(
            ["--from-hf", str(checkpoints["nllb"]), "--name", "nllb", "--task", "translate", "--out-repo", str(repo)]
        )
        == 0
    )
    texts = hf_builders.inputs(3)
    engine = Engine(repo / "nllb", EngineConfig(kv_rows=8, intra_op_threads=1))
    want = [
        g.text for g in engine.generate(texts, target_lang="deu_Latn", source_lang="eng_Latn", split_sentences=True)
    ]
    assert want != [g.text for g in engine.generate(texts, target_lang="fra_Latn", source_lang="eng_Latn")]
    # `heed generate` takes the same codes: German from French, which the source tag must say
    from_french = [g.token_ids for g in engine.generate(texts, target_lang="deu_Latn", source_lang="fra_Latn")]
    cli = offline(repo / "nllb", texts, "--target-lang", "de", "--source-lang", "fr")
    assert [line["token_ids"] for line in cli] == from_french
    assert from_french != [g.token_ids for g in engine.generate(texts, target_lang="deu_Latn", source_lang="eng_Latn")]
    with running(repo, tmp_path / "server.log") as server:
        libre = server.client.post("/translate", json={"q": texts, "source": "en", "target": "de"})
        assert libre.status_code == 200, libre.text
        assert libre.json()["translatedText"] == want
        deepl = server.client.post("/v2/translate", json={"text": texts, "target_lang": "DE", "source_lang": "EN"})
        assert deepl.status_code == 200, deepl.text
        assert [t["text"] for t in deepl.json()["translations"]] == want
        refused = server.client.post("/translate", json={"q": "hello", "source": "en", "target": "zh"})
        assert refused.status_code == 400 and "zh" in refused.json()["error"]  # zho_Hans or zho_Hant?
        [model] = server.client.get("/v1/models").json()["models"]
    languages = model["languages"]
    assert len(languages["target"]) == 202 and languages["default_source"] == "eng_Latn"
    assert languages["names"]["deu_Latn"] == "German (Latin)"
    assert languages["names"]["zho_Hant"] == "Chinese (Han (Traditional variant))"


def test_m2m100_vocab_missing_bpe_pieces_is_refused(checkpoints, tmp_path, capsys):
    """A BPE piece that vocab.json lacks would be <unk> in transformers; heed's BPE cannot say so."""
    broken = shutil.copytree(checkpoints["m2m100"], tmp_path / "hf")
    vocab = json.loads((broken / "vocab.json").read_text())
    dropped = next(piece for piece in vocab if piece.startswith("▁") and len(piece) > 2)
    kept = [piece for piece in sorted(vocab, key=vocab.get) if piece != dropped]
    (broken / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(kept)}))
    assert (
        export_main(["--from-hf", str(broken), "--name", "m", "--task", "translate", "--out-repo", str(tmp_path)]) == 2
    )
    assert f"lacks 1 pieces of sentencepiece.bpe.model (['{dropped}'])" in capsys.readouterr().err
