"""Prepare heed's default models for serving: export the committed weights (export/weights/)
into model directories, one per recipe, each checked against PyTorch by `write_model_dir`.

    python -m export.defaults --out-repo models

`make serve` runs this once; retrain the weights with `python -m export.train` (see
docs/default-models.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.checkpoint import WEIGHTS_DIR, load
from export.package import write_model_dir
from export.recipes import RECIPES, SPECIAL_TOKENS
from service.manifest import Manifest


def prepare(out_repo: Path, weights: Path = WEIGHTS_DIR, names: list[str] | None = None) -> list[Manifest]:
    manifests = []
    for name in names or list(RECIPES):
        recipe = RECIPES[name]
        model, tokenizer = load(weights, name)
        manifests.append(
            write_model_dir(
                model,
                tokenizer,
                Path(out_repo) / name,
                name=name,
                task=recipe.task,
                architecture="heed",
                special_tokens=SPECIAL_TOKENS,
                languages=recipe.languages(tokenizer),
                source_languages=recipe.source_languages,
                generation=recipe.generation,
                limits=recipe.limits,
            )
        )
    return manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.defaults", description=__doc__.splitlines()[0])
    parser.add_argument("--out-repo", type=Path, default=Path("models"))
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="directory of <name>.safetensors")
    parser.add_argument("--name", action="append", choices=sorted(RECIPES), help="only this model (repeatable)")
    args = parser.parse_args(argv)
    for manifest in prepare(args.out_repo, args.weights, args.name):
        print(f"wrote {args.out_repo / manifest.name} ({manifest.task}, {manifest.parameters:,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
