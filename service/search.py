"""Token selection for one sequence: logits processors, then greedy, sampling or beam search.

The processors and the beam search follow `transformers.generate` step for step (same order,
same length conventions, same finished-hypothesis bookkeeping), because users who bring a
checkpoint expect the tokens transformers gives them. Lengths: `generated` counts tokens after
the decoder start token; transformers' `cur_len` is `generated + 1`.

A search owns `rows` cache rows (1, or beam_size). Each step it receives those rows' logits and
returns, per row, the row of the previous step it continues (the cache is reordered to match).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from service.options import DecodingConfig

NEG = np.float32(-np.inf)
BEAM_PENALTY = np.float32(-1.0e9)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def banned_ngram_tokens(history: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `history`."""
    if len(history) + 1 < n:
        return []
    prefix = tuple(history[len(history) - n + 1 :]) if n > 1 else ()
    return [history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i : i + n - 1]) == prefix]


def process_scores(
    scores: np.ndarray, histories: list[list[int]], cfg: DecodingConfig, eos_id: int, generated: int
) -> np.ndarray:
    """Apply the configured processors in place to `scores` `[rows, V]` (transformers' order)."""
    if cfg.repetition_penalty != 1.0:
        for row, history in enumerate(histories):
            ids = np.unique(np.asarray(history))
            s = scores[row, ids]
            scores[row, ids] = np.where(s < 0, s * cfg.repetition_penalty, s / cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size:
        for row, history in enumerate(histories):
            banned = banned_ngram_tokens(history, cfg.no_repeat_ngram_size)
            if banned:
                scores[row, banned] = NEG
    for word in cfg.bad_words_ids:
        if list(word) == [eos_id]:
            continue
        for row, history in enumerate(histories):
            if len(word) == 1 or tuple(history[len(history) - len(word) + 1 :]) == word[:-1]:
                scores[row, word[-1]] = NEG
    if generated < cfg.min_new_tokens:
        scores[:, eos_id] = NEG
    if cfg.forced_bos_id is not None and generated == 0:
        scores[:] = NEG
        scores[:, cfg.forced_bos_id] = 0
    if cfg.forced_eos_id is not None and generated == cfg.max_new_tokens - 1:
        scores[:] = NEG
        scores[:, cfg.forced_eos_id] = 0
    return scores


class Search(ABC):
    """Base: per-row token histories (starting with the decoder start token) and the outcome."""

    rows: int = 1

    def __init__(self, cfg: DecodingConfig, start_id: int, eos_id: int):
        self.cfg, self.eos_id = cfg, eos_id
        self.sequences: list[list[int]] = [[start_id] for _ in range(self.rows)]
        self.generated = 0
        self.done = False
        self.finish_reason: str | None = None

    def last_tokens(self) -> list[int]:
        return [seq[-1] for seq in self.sequences]

    @abstractmethod
    def step(self, logits: np.ndarray) -> np.ndarray | None:
        """Consume `[rows, V]` logits (this search's own copy: it may change them in place);
        return each row's parent row, or None if unchanged."""

    def output(self) -> list[int]:
        """Generated tokens without the start token and without a final EOS."""
        tokens = self._best()[1:]
        return tokens[:-1] if tokens and tokens[-1] == self.eos_id and self.finish_reason == "eos" else tokens

    def _best(self) -> list[int]:
        return self.sequences[0]

    def stop(self, reason: str) -> None:
        self.done, self.finish_reason = True, reason


class Greedy(Search):
    def _choose(self, scores: np.ndarray) -> int:
        return int(np.argmax(scores[0]))

    def step(self, logits: np.ndarray) -> None:
        scores = process_scores(
            logits.astype(np.float32, copy=False), self.sequences, self.cfg, self.eos_id, self.generated
        )
        token = self._choose(scores)
        self.sequences[0].append(token)
        self.generated += 1
        if token == self.eos_id:
            self.stop("eos")
        elif self.generated >= self.cfg.max_new_tokens:
            self.stop("length")
        return None


class Sampling(Greedy):
    """Temperature, then top-k, then top-p (nucleus), then a draw from the seeded generator."""

    def __init__(self, cfg: DecodingConfig, start_id: int, eos_id: int, rng: np.random.Generator):
        super().__init__(cfg, start_id, eos_id)
        self.rng = rng

    def _choose(self, scores: np.ndarray) -> int:
        s = scores[0] / np.float32(self.cfg.temperature)
        if 0 < self.cfg.top_k < s.shape[0]:
            kth = np.partition(s, -self.cfg.top_k)[-self.cfg.top_k]
            s = np.where(s < kth, NEG, s)
        if self.cfg.top_p < 1.0:
            order = np.argsort(s, kind="stable")
            cumulative = np.cumsum(softmax(s[order].astype(np.float64)))
            drop = cumulative <= 1.0 - self.cfg.top_p
            drop[-1] = False
            s = s.copy()
            s[order[drop]] = NEG
        probs = softmax(s.astype(np.float64))
        cumulative = np.cumsum(probs)
        return int(min(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"), len(probs) - 1))


class BeamSearch(Search):
    """transformers' beam search (v4.50+ vectorized form), for one input.

    Keeps 2*beams candidates per step so that beams finishing with EOS leave enough live ones;
    finished hypotheses are scored sum(logp) / generated**length_penalty and kept if they beat
    the worst of the `beams` best so far; stops when no live beam can improve on them.
    """

    def __init__(self, cfg: DecodingConfig, start_id: int, eos_id: int):
        self.rows = cfg.beam_size
        super().__init__(cfg, start_id, eos_id)
        k = self.rows
        self.running_scores = np.full(k, BEAM_PENALTY, dtype=np.float32)
        self.running_scores[0] = 0
        self.finished: list[list[int]] = [[start_id] for _ in range(k)]
        self.finished_scores = np.full(k, BEAM_PENALTY, dtype=np.float32)
        self.is_finished = np.zeros(k, dtype=bool)
        self.improvable = True

    def step(self, logits: np.ndarray) -> np.ndarray:
        k, cfg = self.rows, self.cfg
        logp = log_softmax(logits.astype(np.float32, copy=False))
        logp = process_scores(logp, self.sequences, cfg, self.eos_id, self.generated)
        vocab = logp.shape[1]
        flat = (logp + self.running_scores[:, None]).reshape(-1)
        keep = 2 * k
        top = np.argpartition(-flat, keep - 1)[:keep]
        top = top[np.argsort(-flat[top], kind="stable")]
        cand_scores = flat[top]
        parents, tokens = top // vocab, top % vocab
        cand_seqs = [[*self.sequences[p], int(t)] for p, t in zip(parents, tokens)]
        hits = (tokens == self.eos_id) | (self.generated + 1 >= cfg.max_new_tokens)

        running = cand_scores + hits.astype(np.float32) * BEAM_PENALTY
        order = np.argsort(-running, kind="stable")[:k]
        self.sequences = [cand_seqs[i] for i in order]
        self.running_scores = running[order]

        final = cand_scores / np.float32((self.generated + 1) ** cfg.length_penalty)
        if self.is_finished.all() and cfg.early_stopping:
            final = final + BEAM_PENALTY
        if not self.improvable:
            final = final + BEAM_PENALTY
        just_finished = hits & (np.arange(keep) < k)
        final = final + (~just_finished).astype(np.float32) * BEAM_PENALTY
        merged_scores = np.concatenate([self.finished_scores, final])
        merged_seqs = self.finished + cand_seqs
        merged_flags = np.concatenate([self.is_finished, just_finished])
        best = np.argsort(-merged_scores, kind="stable")[:k]
        self.finished = [merged_seqs[i] for i in best]
        self.finished_scores = merged_scores[best]
        self.is_finished = merged_flags[best]

        self.generated += 1
        best_possible = self.running_scores[0] / np.float32(self.generated**cfg.length_penalty)
        worst = np.where(self.is_finished, self.finished_scores.min(), BEAM_PENALTY)
        self.improvable = self.improvable and bool(np.any(best_possible > worst))
        beams_full = bool(self.is_finished.all()) and cfg.early_stopping
        if not self.improvable or beams_full or hits.all():
            self.stop("eos" if self.finished[0][-1] == self.eos_id else "length")
        return parents[order]

    def _best(self) -> list[int]:
        return self.finished[0]


def make_search(cfg: DecodingConfig, start_id: int, eos_id: int, rng: np.random.Generator) -> Search:
    if cfg.beam_size > 1:
        return BeamSearch(cfg, start_id, eos_id)
    if cfg.sample:
        return Sampling(cfg, start_id, eos_id, rng)
    return Greedy(cfg, start_id, eos_id)
