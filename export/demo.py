"""A tiny demo model built locally in seconds: tokenizer trained here, random weights.

`make serve` serves it until heed's trained default models exist; the tests build their tiny
models with the same functions (and spec overrides).

    python -m export.demo --out-repo models
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer

from export.model import Seq2SeqModel
from export.package import write_model_dir
from export.tokenizer_train import train_tokenizer
from service.manifest import GenerationDefaults, LanguageTags, ModelSpec, SpecialTokens, StackSpec

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today?",
    "one two three four five six seven eight nine ten",
    "a long report about the weather in the mountains and the sea",
    "numbers like 12 and 345 are written with digits",
] * 10
LANGS = ["de", "fr", "es"]


@cache
def tokenizer() -> Tokenizer:
    return train_tokenizer(CORPUS, 160, [f">>{lang}<<" for lang in LANGS])


def spec(**overrides) -> ModelSpec:
    """A small spec; the LM head is untied so that random weights give varied outputs."""
    base = dict(
        vocab_size=tokenizer().get_vocab_size(),
        d_model=32,
        n_heads=4,
        d_ff=64,
        max_positions=128,
        encoder=StackSpec(layers=2),
        decoder=StackSpec(layers=2, attention={"kind": "causal"}),
        tie_lm_head=False,
    )
    return ModelSpec.model_validate(base | overrides)


def build_model(model_spec: ModelSpec, seed: int = 0) -> Seq2SeqModel:
    torch.manual_seed(seed)
    model = Seq2SeqModel(model_spec).eval()
    with torch.no_grad():  # varied, non-zero biases and norm weights so that every parameter matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.normal_(0, 0.1)
    return model


def build_model_dir(
    out: Path,
    name: str = "tiny",
    model_spec: ModelSpec | None = None,
    seed: int = 0,
    task: str = "translate",
    **generation,
) -> tuple[Seq2SeqModel, Path]:
    tok = tokenizer()
    model = build_model(model_spec or spec(), seed)
    languages = None
    if task == "translate":
        languages = LanguageTags(
            placement="source_prefix", tokens={lang: tok.token_to_id(f">>{lang}<<") for lang in LANGS}, default="de"
        )
    directory = Path(out) / name
    write_model_dir(
        model,
        tok,
        directory,
        name=name,
        task=task,
        architecture="heed",
        special_tokens=SpecialTokens(pad_id=0, eos_id=1, decoder_start_id=0, unk_id=2),
        languages=languages,
        generation=GenerationDefaults(bad_words_ids=[[0]], **generation),
    )
    return model, directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out-repo", type=Path, default=Path("models"))
    parser.add_argument("--name", default="demo-translate")
    args = parser.parse_args(argv)
    _, directory = build_model_dir(args.out_repo, args.name)
    print(f"wrote {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
