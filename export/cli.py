"""`heed export`: build a model directory from a heed model config (and weights), or, with
`--from-hf`, from a local Hugging Face checkpoint (see export/hf)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_model
from tokenizers import Tokenizer

from export.model import Seq2SeqModel
from export.package import write_model_dir
from service.manifest import GenerationDefaults, LanguageTags, Limits, ModelSpec, SpecialTokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heed export", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="JSON with name, task, spec, special_tokens and optionally languages, generation, limits",
    )
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json (HF tokenizers format)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="weights of heed's Seq2SeqModel (safetensors.torch.save_model); "
        "without it the weights are random (for benchmarks and tests)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out-repo", type=Path, required=True, help="model repository; writes OUT_REPO/NAME")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    config = json.loads(args.config.read_text())
    spec = ModelSpec.model_validate(config["spec"])
    torch.manual_seed(args.seed)
    model = Seq2SeqModel(spec).eval()
    if args.weights:
        load_model(model, str(args.weights), strict=True)
    manifest = write_model_dir(
        model,
        Tokenizer.from_file(str(args.tokenizer)),
        args.out_repo / config["name"],
        name=config["name"],
        task=config["task"],
        architecture=config.get("architecture", "heed"),
        special_tokens=SpecialTokens.model_validate(config["special_tokens"]),
        languages=LanguageTags.model_validate(config["languages"]) if config.get("languages") else None,
        generation=GenerationDefaults.model_validate(config.get("generation", {})),
        limits=Limits.model_validate(config["limits"]) if config.get("limits") else None,
    )
    print(f"exported {manifest.name} ({manifest.parameters:,} parameters) to {args.out_repo / manifest.name}")
    return 0
