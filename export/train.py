"""Train one of heed's default models on its synthetic data, on the CPU, with PyTorch.

    python -m export.train heed-numbers --steps 6000 --out export/weights
    python -m export.train heed-reports --steps 3000 --out export/weights

Teacher forcing through `Seq2SeqModel.forward`, cross-entropy on the target tokens, AdamW with
linear warm-up and cosine decay, gradient clipping. Every random choice (tokenizer corpus, data,
initialisation) follows `--seed`, so a run is reproducible on the same machine and versions.
Writes `<name>.safetensors` (fp16 weights; the spec and training settings in its metadata) and
`<name>.tokenizer.json` into `--out`, at every `--save-every` steps and at the end.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor
from tqdm import tqdm

from export.checkpoint import load, save
from export.model import Seq2SeqModel
from export.recipes import RECIPES, SPECIAL_TOKENS, Pair, Recipe

IGNORE = -100


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2


@dataclass
class Batch:
    input_ids: Tensor
    attention_mask: Tensor
    decoder_input_ids: Tensor
    labels: Tensor


def encode_source(tokenizer: Tokenizer, pair: Pair) -> list[int]:
    """Source ids exactly as heed's engine builds them: the language tag id, then the text + `</s>`."""
    prefix = [tokenizer.token_to_id(pair.tag)] if pair.tag else []
    return prefix + tokenizer.encode(pair.source).ids


def collate(tokenizer: Tokenizer, pairs: list[Pair]) -> Batch:
    sources = [encode_source(tokenizer, p) for p in pairs]
    targets = [tokenizer.encode(p.target).ids for p in pairs]
    pad, start = SPECIAL_TOKENS.pad_id, SPECIAL_TOKENS.decoder_start_id
    src_len, tgt_len = max(map(len, sources)), max(map(len, targets))
    input_ids = torch.full((len(pairs), src_len), pad)
    attention_mask = torch.zeros((len(pairs), src_len), dtype=torch.long)
    decoder_input_ids = torch.full((len(pairs), tgt_len), pad)
    labels = torch.full((len(pairs), tgt_len), IGNORE)
    for i, (src, tgt) in enumerate(zip(sources, targets)):
        input_ids[i, : len(src)] = torch.tensor(src)
        attention_mask[i, : len(src)] = 1
        decoder_input_ids[i, : len(tgt)] = torch.tensor([start, *tgt[:-1]])
        labels[i, : len(tgt)] = torch.tensor(tgt)
    return Batch(input_ids, attention_mask, decoder_input_ids, labels)


def loss_of(model: Seq2SeqModel, batch: Batch) -> Tensor:
    logits = model(batch.input_ids, batch.attention_mask, batch.decoder_input_ids)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)


def learning_rate(step: int, cfg: TrainConfig, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak. With a wall-clock budget, the
    decay follows whichever runs out first, steps or time, so a cut-short run still ends cool."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_progress)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def init_weights(model: Seq2SeqModel) -> None:
    """Token embeddings with std 1/sqrt(d_model) (Transformer/Marian init): with scaled
    embeddings the inputs are of unit size, and the tied LM head starts with logits near 0."""
    std = model.spec.d_model**-0.5
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding) and module.weight.requires_grad:
                module.weight.normal_(0.0, std)


@torch.no_grad()
def greedy(model: Seq2SeqModel, tokenizer: Tokenizer, pairs: list[Pair], max_new_tokens: int) -> list[str]:
    """Plain greedy decoding without a cache: for monitoring training, not for serving."""
    model.eval()
    batch = collate(tokenizer, pairs)
    cross = model.encode(batch.input_ids, batch.attention_mask)
    out = torch.full((len(pairs), 1), SPECIAL_TOKENS.decoder_start_id)
    done = torch.zeros(len(pairs), dtype=torch.bool)
    for _ in range(max_new_tokens):
        positions = torch.arange(out.shape[1]).expand(len(pairs), -1)
        logits, _, _ = model.decode(out, positions, None, cross, batch.attention_mask)
        logits[:, -1, SPECIAL_TOKENS.pad_id] = -math.inf
        token = logits[:, -1].argmax(-1).masked_fill(done, SPECIAL_TOKENS.pad_id)
        out = torch.cat([out, token[:, None]], dim=1)
        done |= token == SPECIAL_TOKENS.eos_id
        if done.all():
            break
    model.train()
    return tokenizer.decode_batch(out[:, 1:].tolist(), skip_special_tokens=True)


def exact_match(model: Seq2SeqModel, tokenizer: Tokenizer, pairs: list[Pair], max_new_tokens: int) -> float:
    outputs = greedy(model, tokenizer, pairs, max_new_tokens)
    return sum(o == p.target for o, p in zip(outputs, pairs)) / len(pairs)


def train(
    recipe: Recipe,
    cfg: TrainConfig,
    out: Path | None = None,
    save_every: int = 500,
    eval_every: int = 250,
    max_minutes: float | None = None,
    spec_overrides: dict | None = None,
    progress: bool = True,
    init_from: Path | None = None,
) -> tuple[Seq2SeqModel, Tokenizer]:
    """Train from scratch, or with `init_from` (a directory holding `<name>.safetensors`) continue
    from a saved model and its tokenizer with a fresh optimizer and schedule. `cfg.threads` is
    applied by `main` (torch's thread count is process-wide)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if init_from is not None:
        model, tokenizer = load(init_from, recipe.name)
        model.train()
    else:
        tokenizer = recipe.build_tokenizer(rng)
        model = Seq2SeqModel(recipe.spec(tokenizer, **(spec_overrides or {}))).train()
        init_weights(model)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    monitor = [p for pairs in recipe.held_out(64).values() for p in pairs[:64]]
    max_new = recipe.generation.max_new_tokens
    metadata = {"recipe": recipe.name, "config": asdict(cfg), "init_from": str(init_from) if init_from else None}
    started = time.monotonic()
    bar = tqdm(range(cfg.steps), desc=recipe.name, disable=not progress, mininterval=5)
    for step in bar:
        elapsed = time.monotonic() - started
        time_progress = elapsed / (max_minutes * 60) if max_minutes else 0.0
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg, time_progress)
        batch = collate(tokenizer, [recipe.training_pair(rng) for _ in range(cfg.batch_size)])
        loss = loss_of(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        last = step + 1 == cfg.steps or time_progress >= 1.0
        if eval_every and ((step + 1) % eval_every == 0 or last):
            accuracy = exact_match(model, tokenizer, monitor, max_new)
            bar.write(f"step {step + 1}: loss {loss.item():.4f}, held-out exact match {accuracy:.3f}")
        if out is not None and ((step + 1) % save_every == 0 or last):
            save(model, tokenizer, out, recipe.name, {**metadata, "steps_done": step + 1})
        if last:
            break
    return model.eval(), tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, default=Path("export/weights"))
    defaults = TrainConfig()
    for key, value in asdict(defaults).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--init-from", type=Path, help="continue from <dir>/<recipe>.safetensors (and its tokenizer)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="wall-clock budget: the learning rate decays by time too, and training stops (and saves) "
        "when it is spent; the run is then no longer reproducible step for step",
    )
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{key: getattr(args, key) for key in asdict(defaults)})
    torch.set_num_threads(cfg.threads)
    train(
        RECIPES[args.recipe],
        cfg,
        args.out,
        args.save_every,
        args.eval_every,
        args.max_minutes,
        init_from=args.init_from,
    )
    print(f"saved {args.out / args.recipe}.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
