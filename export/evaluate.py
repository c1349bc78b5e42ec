"""Exact-match accuracy of heed's default models on their held-out sets, measured the way they
are served: the exported ONNX graphs driven by heed's `Engine` (greedy, the manifest's
defaults). This is the one module of export/ that imports the runtime, because the runtime is
what it measures.

    python -m export.evaluate --model-repo models --count 500 --min-accuracy 0.95

Prints one line per model and target language; exits 1 when any is below `--min-accuracy`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from export.recipes import RECIPES, Recipe
from service.engine import Engine
from service.settings import EngineConfig


@dataclass(frozen=True)
class Score:
    model: str
    lang: str  # "" when the task has no target language
    correct: int
    total: int
    failures: list[tuple[str, str, str]]  # (source, expected, got), the first few

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def evaluate(directory: Path, recipe: Recipe, count: int, threads: int = 2, show: int = 5) -> list[Score]:
    engine = Engine(directory, EngineConfig(intra_op_threads=threads, kv_rows=64))
    scores = []
    for lang, pairs in recipe.held_out(count).items():
        outputs = engine.generate([p.source for p in pairs], target_lang=lang or None)
        failures = [(p.source, p.target, o.text) for p, o in zip(pairs, outputs) if o.text != p.target]
        scores.append(Score(recipe.name, lang, len(pairs) - len(failures), len(pairs), failures[:show]))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=Path("models"))
    parser.add_argument("--name", action="append", choices=sorted(RECIPES), help="only this model (repeatable)")
    parser.add_argument("--count", type=int, default=500, help="held-out examples per model and language")
    parser.add_argument("--min-accuracy", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    scores = []
    for name in args.name or list(RECIPES):
        for score in evaluate(args.model_repo / name, RECIPES[name], args.count, args.threads):
            scores.append(score)
            where = f"{score.model:14} {score.lang or '-':3}"
            print(f"{where} exact match {score.correct}/{score.total} = {score.accuracy:.3f}")
            for source, expected, got in score.failures:
                shown = source if len(source) <= 60 else f"{source[:57]}..."
                print(f"    {shown!r}: expected {expected!r}, got {got!r}")
    if args.json:
        args.json.write_text(json.dumps([asdict(s) | {"accuracy": s.accuracy} for s in scores], indent=2) + "\n")
    below = [s for s in scores if s.accuracy < args.min_accuracy]
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
