"""`heed export`: build a model directory from a heed model config (and weights), or, with
`--from-hf`, from a local Hugging Face checkpoint (see export/hf)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model
from tokenizers import Tokenizer

from export.decoder_model import DecoderOnlyModel
from export.hf import REGISTRY, ConversionError, export_checkpoint
from export.model import Seq2SeqModel
from export.package import write_model_dir
from export.parity import ParityError
from export.quantize import quantize_model_dir
from service.manifest import TEXT_PLACEHOLDER, GenerationDefaults, LanguageTags, Limits, ModelSpec, SpecialTokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heed export", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="JSON with name, task, spec, special_tokens and optionally languages, generation, limits",
    )
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (HF tokenizers format), with --config")
    parser.add_argument(
        "--weights",
        type=Path,
        help="weights of heed's Seq2SeqModel or DecoderOnlyModel (safetensors.torch.save_model); "
        "without it the weights are random (for benchmarks and tests)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--from-hf",
        type=Path,
        metavar="DIR",
        help=f"a local Hugging Face checkpoint folder ({', '.join(sorted(REGISTRY))}); needs --name and --task",
    )
    parser.add_argument("--name", help="model name (with --from-hf)")
    parser.add_argument("--task", choices=["translate", "summarize", "generate"], help="with --from-hf")
    parser.add_argument(
        "--summarize-prompt",
        metavar="TEXT",
        help=f"with --from-hf --task generate: the prompt /v1/summarize gives the model, {TEXT_PLACEHOLDER} where "
        "the text goes (default: service/prompts.py's, by whether the model has a chat template)",
    )
    parser.add_argument("--quantize", choices=["int8"], help="int8 dynamic quantization of the exported graphs")
    parser.add_argument("--out-repo", type=Path, required=True, help="model repository; writes OUT_REPO/NAME")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_hf is not None:
        if args.config or args.tokenizer or args.weights:
            parser.error("--from-hf takes no --config, --tokenizer or --weights")
        if not args.name or not args.task:
            parser.error("--from-hf needs --name and --task")
        prompt = args.summarize_prompt
        if prompt is not None and args.task != "generate":
            parser.error("--summarize-prompt is for a decoder-only model, exported with --task generate")
        if prompt is not None and TEXT_PLACEHOLDER not in prompt:
            parser.error(f"--summarize-prompt must contain {TEXT_PLACEHOLDER}, where the text to summarize goes")
        try:
            manifest = export_checkpoint(
                args.from_hf,
                args.out_repo / args.name,
                name=args.name,
                task=args.task,
                quantize=args.quantize,
                summarize_prompt=prompt,
            )
        except (ConversionError, ParityError) as e:
            print(f"heed export: {e}", file=sys.stderr)
            return 2
        print(
            f"exported {manifest.name} ({manifest.architecture}, {manifest.parameters:,} parameters, "
            f"{manifest.quantization}) to {args.out_repo / manifest.name}"
        )
        return 0
    if args.summarize_prompt is not None:
        parser.error("--summarize-prompt goes with --from-hf")
    if args.config is None or args.tokenizer is None:
        parser.error("give --config and --tokenizer, or --from-hf DIR")
    config = json.loads(args.config.read_text())
    spec = ModelSpec.model_validate(config["spec"])
    torch.manual_seed(args.seed)
    model = (DecoderOnlyModel if spec.decoder_only else Seq2SeqModel)(spec).eval()
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
    if args.quantize == "int8":
        manifest = quantize_model_dir(args.out_repo / manifest.name)
    print(f"exported {manifest.name} ({manifest.parameters:,} parameters) to {args.out_repo / manifest.name}")
    return 0
