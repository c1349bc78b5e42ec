"""Token selection for one sequence: logits processors, then greedy, sampling or beam search.

The processors and the beam search follow `transformers.generate` step for step (same order,
same length conventions, same finished-hypothesis bookkeeping), because users who bring a
checkpoint expect the tokens transformers gives them. A search's histories start with its
`prefix`: the decoder start token of an encoder-decoder model, or a decoder-only model's prompt
(which transformers' processors, such as the repetition penalty, see too). Lengths: `generated`
counts tokens after the prefix; transformers' `cur_len` is `generated + len(prefix)`. An output
ends at any of the model's EOS tokens (`eos_ids`, transformers' list of `eos_token_id`).

A search owns `rows` cache rows (1, or beam_size). Each step it receives those rows' `Scores` and
returns, per row, the row of the previous step it continues (the cache is reordered to match).
`Scores` are either the whole vocabulary's logits or, usually, the K best tokens of each row that
the decoder graph selected: processors only ban or lower scores (a repetition penalty below 1,
which raises them, and sampling ask for the whole vocabulary), so a choice among the K best is the
choice over the vocabulary whenever it beats `bound`, the best score any other token can have.
When it does not (ties at the bound, or too many candidates banned) the step returns `INEXACT`
without changing the search, and the engine gives it the whole vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from service.options import DecodingConfig

NEG = np.float32(-np.inf)
BEAM_PENALTY = np.float32(-1.0e9)
SPARE_CANDIDATES = 16  # tokens beyond those a search keeps that processors may ban before a step is inexact


class Inexact:
    """A search's answer when the K best tokens could not decide its step."""


INEXACT = Inexact()


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


class Scores:
    """Next-token scores of a search's rows (a copy it may change in place).

    `values` `[rows, C]`: logits, or log-probabilities with `ids` (beam search's top-K path).
    `ids` `[rows, C]`: the token of each column (the K best, best first), or None when the
    columns are the whole vocabulary. `bound` `[rows]`: the highest unprocessed score of a token
    outside the columns. A search over the whole vocabulary is always exact.
    """

    def __init__(self, values: np.ndarray, ids: np.ndarray | None = None):
        self.values, self.ids = values, ids
        self.bound = None if ids is None else values[:, -1].copy()

    def columns(self, row: int, tokens) -> np.ndarray:
        """The columns of `row` that hold any of `tokens`."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        return tokens if self.ids is None else np.flatnonzero(np.isin(self.ids[row], tokens))

    def set(self, token: int, value: np.float32, row: int | None = None) -> None:
        """Set `token`'s score in `row` (every row if None), where it is among the columns."""
        rows = slice(None) if row is None else row
        if self.ids is None:
            self.values[rows, token] = value
        else:
            self.values[rows][self.ids[rows] == token] = value

    def force(self, token: int) -> None:
        """Only `token` may come next (score 0, every other -inf): decided on the K best too."""
        self.values[:] = NEG
        if self.ids is None:
            self.values[:, token] = 0
        else:
            self.ids = self.ids.copy()
            self.ids[:, 0], self.values[:, 0], self.bound = token, 0, np.full(len(self.values), NEG)

    def tokens(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        return columns if self.ids is None else self.ids[rows, columns]


def process_scores(
    scores: Scores, histories: list[list[int]], cfg: DecodingConfig, eos_ids: tuple[int, ...], generated: int
) -> np.ndarray:
    """Apply the configured processors in place to `scores.values` (transformers' order)."""
    v = scores.values
    if cfg.repetition_penalty != 1.0:
        for row, history in enumerate(histories):
            cols = scores.columns(row, np.unique(np.asarray(history)))
            s = v[row, cols]
            v[row, cols] = np.where(s < 0, s * cfg.repetition_penalty, s / cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size:
        for row, history in enumerate(histories):
            banned = banned_ngram_tokens(history, cfg.no_repeat_ngram_size)
            if banned:
                v[row, scores.columns(row, banned)] = NEG
    for word in cfg.bad_words_ids:
        if len(word) == 1 and word[0] in eos_ids:
            continue
        if len(word) == 1:
            scores.set(word[0], NEG)
            continue
        for row, history in enumerate(histories):
            if tuple(history[len(history) - len(word) + 1 :]) == word[:-1]:
                scores.set(word[-1], NEG, row)
    if generated < cfg.min_new_tokens:
        for eos_id in eos_ids:
            scores.set(eos_id, NEG)
    forced = None
    if cfg.forced_bos_id is not None and generated == 0:
        forced = cfg.forced_bos_id
    elif cfg.forced_eos_id is not None and generated == cfg.max_new_tokens - 1:
        forced = cfg.forced_eos_id
    if forced is not None:
        scores.force(forced)
    return scores.values


class Search(ABC):
    """Base: per-row token histories (starting with the prefix) and the outcome."""

    rows: int = 1
    keep: int = 1  # tokens a step chooses per row
    log_probs: bool = False  # scores are log-probabilities (beam search), else logits

    def __init__(self, cfg: DecodingConfig, prefix: list[int], eos_ids: tuple[int, ...]):
        self.cfg, self.eos_ids = cfg, eos_ids
        self.start = len(prefix)  # where the output begins in each history
        self.sequences: list[list[int]] = [list(prefix) for _ in range(self.rows)]
        self.generated = 0
        self.done = False
        self.finish_reason: str | None = None

    def last_tokens(self) -> list[int]:
        return [seq[-1] for seq in self.sequences]

    @property
    def position(self) -> int:
        """The position of the last tokens, which the next decoder step reads."""
        return self.start + self.generated - 1

    @property
    def candidates(self) -> int:
        """The K best tokens per row this search asks of the graph (0: it needs the whole vocabulary)."""
        if self.cfg.repetition_penalty < 1.0:  # raises the scores of tokens seen: any of them may become best
            return 0
        return self.keep + SPARE_CANDIDATES

    @abstractmethod
    def step(self, scores: Scores) -> np.ndarray | Inexact | None:
        """Consume this step's scores; return each row's parent row, None if unchanged, or `INEXACT`
        (nothing changed) when the K best tokens were not enough to decide."""

    def output(self) -> list[int]:
        """Generated tokens without the start token and without a final EOS."""
        tokens = self._best()[self.start :]
        return tokens[:-1] if tokens and tokens[-1] in self.eos_ids and self.finish_reason == "eos" else tokens

    def _best(self) -> list[int]:
        return self.sequences[0]

    def alternatives(self, n: int) -> list[list[int]]:
        """Up to `n` outputs next best after `output()` (only beam search keeps any)."""
        return []

    def stop(self, reason: str) -> None:
        self.done, self.finish_reason = True, reason


class Greedy(Search):
    def _choose(self, scores: Scores) -> int | None:
        """The best token, the lowest id among equals (as argmax over the vocabulary); None if a
        token outside the columns might be as good."""
        v = scores.values[0]
        best = v.max()
        if scores.ids is not None and not best > scores.bound[0]:
            return None
        cols = np.flatnonzero(v == best)
        return int(cols[0] if scores.ids is None else scores.ids[0, cols].min())

    def step(self, scores: Scores) -> Inexact | None:
        process_scores(scores, self.sequences, self.cfg, self.eos_ids, self.generated)
        token = self._choose(scores)
        if token is None:
            return INEXACT
        self.sequences[0].append(token)
        self.generated += 1
        if token in self.eos_ids:
            self.stop("eos")
        elif self.generated >= self.cfg.max_new_tokens:
            self.stop("length")
        return None


class Sampling(Greedy):
    """Temperature, then top-k, then top-p (nucleus), then a draw from the seeded generator."""

    def __init__(self, cfg: DecodingConfig, prefix: list[int], eos_ids: tuple[int, ...], rng: np.random.Generator):
        super().__init__(cfg, prefix, eos_ids)
        self.rng = rng

    @property
    def candidates(self) -> int:
        return 0  # top-k and top-p need the whole distribution

    def _choose(self, scores: Scores) -> int:
        s = scores.values[0] / np.float32(self.cfg.temperature)
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

    Keeps max(2, 1 + EOS tokens) * beams candidates per step so that beams finishing with EOS
    leave enough live ones;
    finished hypotheses are scored sum(logp) / generated**length_penalty and kept if they beat
    the worst of the `beams` best so far; stops when no live beam can improve on them.
    """

    log_probs = True

    def __init__(self, cfg: DecodingConfig, prefix: list[int], eos_ids: tuple[int, ...]):
        self.rows, self.keep = cfg.beam_size, max(2, 1 + len(eos_ids)) * cfg.beam_size
        super().__init__(cfg, prefix, eos_ids)
        k = self.rows
        self.running_scores = np.full(k, BEAM_PENALTY, dtype=np.float32)
        self.running_scores[0] = 0
        self.finished: list[list[int]] = [list(prefix) for _ in range(k)]
        self.finished_scores = np.full(k, BEAM_PENALTY, dtype=np.float32)
        self.is_finished = np.zeros(k, dtype=bool)
        self.improvable = True

    def step(self, scores: Scores) -> np.ndarray | Inexact:
        k, cfg = self.rows, self.cfg
        if scores.ids is None:
            scores.values = log_softmax(scores.values)
        logp = process_scores(scores, self.sequences, cfg, self.eos_ids, self.generated)
        flat = (logp + self.running_scores[:, None]).reshape(-1)
        keep = self.keep
        top = np.argpartition(-flat, keep - 1)[:keep]
        if scores.ids is not None:
            excluded = (scores.bound + self.running_scores).max()  # the best score left out of the columns
            if excluded > NEG and not flat[top].min() > excluded:
                return INEXACT
        parents, columns = np.divmod(top, logp.shape[1])
        tokens = scores.tokens(parents, columns)
        order = np.lexsort((tokens, parents, -flat[top]))  # best first; equals by (parent, token)
        top, parents, tokens = top[order], parents[order], tokens[order]
        cand_scores = flat[top]
        cand_seqs = [[*self.sequences[p], int(t)] for p, t in zip(parents, tokens)]
        hits = np.isin(tokens, self.eos_ids) | (self.generated + 1 >= cfg.max_new_tokens)

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
            self.stop("eos" if self.finished[0][-1] in self.eos_ids else "length")
        return parents[order]

    def _best(self) -> list[int]:
        return self.finished[0]

    def alternatives(self, n: int) -> list[list[int]]:
        found = [seq[self.start :] for seq, done in zip(self.finished[1:], self.is_finished[1:]) if done][:n]
        return [seq[:-1] if seq and seq[-1] in self.eos_ids else seq for seq in found]


def make_search(cfg: DecodingConfig, prefix: list[int], eos_ids: tuple[int, ...], rng: np.random.Generator) -> Search:
    if cfg.beam_size > 1:
        return BeamSearch(cfg, prefix, eos_ids)
    if cfg.sample:
        return Sampling(cfg, prefix, eos_ids, rng)
    return Greedy(cfg, prefix, eos_ids)
