"""The engine: one model's tokenizer, runner and KV cache, and the iteration-level step loop.

Sequences join (`admit`: one encoder pass for the group, cross K/V written to their rows) and
leave (finished, stopped or cancelled: rows freed at once) between decoder steps; every `step`
runs the decoder once for all running rows, new and old together. The offline `generate` and
the HTTP scheduler drive the same loop, so the CLI and the server give the same tokens.

Not thread-safe: one thread (the scheduler's, or the caller's) owns an engine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.errors import InputTooLong, InvalidInput, InvalidOptions
from service.kv_cache import KVCache, Slot
from service.manifest import Manifest, load_manifest
from service.options import DecodingConfig, GenerationOptions, ServerLimits, resolve
from service.runner import DecoderStep, ModelRunner
from service.search import INEXACT, Scores, Search, make_search
from service.settings import Settings
from service.tokenizer import TextCodec


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    input_tokens: int
    output_tokens: int
    finish_reason: str  # eos | length | stop | cancelled
    alignment: list[list[float]] | None = None  # [output token][input token] cross-attention weights


class Sequence:
    """One input text on its way through the engine."""

    def __init__(
        self,
        input_ids: list[int],
        search: Search,
        cfg: DecodingConfig,
        on_token: Callable[[Sequence, int], None] | None = None,
        return_alignment: bool = False,
    ):
        self.input_ids, self.search, self.cfg, self.on_token = input_ids, search, cfg, on_token
        self.return_alignment = return_alignment
        self.slots: list[Slot] = []
        self.result: Generation | None = None

    @property
    def rows(self) -> int:
        return self.search.rows

    @property
    def done(self) -> bool:
        return self.result is not None


class Engine:
    def __init__(self, directory: Path, settings: Settings | None = None, manifest: Manifest | None = None):
        settings = settings or Settings()
        self.directory = Path(directory)
        self.manifest = manifest or load_manifest(self.directory)
        self.limits = ServerLimits(settings.max_new_tokens, settings.max_beam_size)
        self.codec = TextCodec(self.directory / self.manifest.files.tokenizer)
        self.runner = ModelRunner(
            self.directory, self.manifest, settings.provider, settings.intra_op_threads, settings.ort_spinning
        )
        spec = self.manifest.spec
        self.cache = KVCache(spec.decoder.layers, spec.kv_heads, spec.head_dim, settings.kv_rows)
        self.running: list[Sequence] = []

    @property
    def name(self) -> str:
        return self.manifest.name

    # -- preparing requests -------------------------------------------------------------------

    def prepare(
        self,
        texts: list[str],
        options: GenerationOptions | dict | None = None,
        target_lang: str | None = None,
        truncate: bool = False,
        on_token: Callable[[Sequence, int], None] | None = None,
        return_alignment: bool = False,
    ) -> list[Sequence]:
        """Validate and tokenize a request; raises a `RequestError` for anything heed refuses."""
        if not texts:
            raise InvalidInput("no input text given")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"input text {i} is empty")
        if not isinstance(options, GenerationOptions):
            options = GenerationOptions.parse(options)
        cfg = resolve(options, self.manifest.generation, self.manifest.limits, self.limits)
        prefix, cfg = self._language(target_lang, cfg)
        if cfg.beam_size > self.cache.max_rows:
            raise InvalidOptions(
                f"option 'beam_size': {cfg.beam_size} is over this server's {self.cache.max_rows} rows"
            )
        ids = self.codec.encode(texts, prefix)
        limit = self.manifest.limits.max_input_tokens
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                if not truncate:
                    raise InputTooLong(
                        f"input text {i} has {len(seq)} tokens; this model takes at most {limit} "
                        '(send "truncate": true to cut it)'
                    )
                ids[i] = seq[: limit - 1] + seq[-1:]
        special = self.manifest.special_tokens
        sequences = []
        for i, seq in enumerate(ids):
            rng = np.random.default_rng(None if cfg.seed is None else [cfg.seed, i])
            search = make_search(cfg, special.decoder_start_id, special.eos_id, rng)
            sequences.append(Sequence(seq, search, cfg, on_token, return_alignment))
        return sequences

    def _language(self, target: str | None, cfg: DecodingConfig) -> tuple[list[int], DecodingConfig]:
        tags = self.manifest.languages
        if tags is None:
            if target is not None:
                raise InvalidOptions(f"model '{self.name}' has no target languages; leave target_lang out")
            return [], cfg
        target = target or tags.default
        if target not in tags.tokens:
            choices = ", ".join(sorted(tags.tokens))
            raise InvalidOptions(f"target_lang {target!r} is not one of this model's languages: {choices}")
        if tags.placement == "source_prefix":
            return [tags.tokens[target]], cfg
        return [], replace(cfg, forced_bos_id=tags.tokens[target])

    # -- the step loop -------------------------------------------------------------------------

    def admit(self, sequences: list[Sequence]) -> None:
        """Encode a group of new sequences at once and give them cache rows; they take part in
        the next step. The caller checks `cache.free` first."""
        if not sequences:
            return
        longest = max(len(s.input_ids) for s in sequences)
        pad = self.manifest.special_tokens.pad_id
        input_ids = np.full((len(sequences), longest), pad, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for i, s in enumerate(sequences):
            input_ids[i, : len(s.input_ids)] = s.input_ids
            mask[i, : len(s.input_ids)] = 1
        cross = self.runner.encode(input_ids, mask)
        rows = self.cache.used + sum(s.rows for s in sequences)
        self.cache.ensure(rows, max(self.cache.past_cap, 1), longest)  # grow once for the group
        for i, s in enumerate(sequences):
            s.slots = self.cache.allocate(s.rows)
            self.cache.write_cross(s.slots, cross, i, len(s.input_ids))
            self.running.append(s)

    def step(self) -> list[Sequence]:
        """One decoder step for every running row; returns the sequences that finished."""
        if not self.running:
            return []
        n = self.cache.used
        tokens = np.zeros((n, 1), dtype=np.int64)
        positions = np.zeros((n, 1), dtype=np.int64)
        for s in self.running:
            for slot, token in zip(s.slots, s.search.last_tokens()):
                tokens[slot.row, 0] = token
                positions[slot.row, 0] = s.search.generated
        self.cache.ensure(n, int(positions.max()) + 1, self.cache.source_cap)
        feeds = self.cache.decoder_feeds(self.runner.cache_inputs)
        wanted = [s.search.candidates for s in self.running]
        top_k = 0 if 0 in wanted else max(wanted)
        logprobs = any(s.search.log_probs for s in self.running)
        out = self.runner.decode(tokens, positions, self.cache.source_mask[:n], feeds, top_k, logprobs)
        self.cache.write_new(out.new_kv, positions)
        finished, dst, src = [], [], []  # beam rows that continue another row of their group
        inexact = [s for s in self.running if not self._advance(s, self._scores(s, out), finished, dst, src)]
        if inexact:  # their K best tokens could not decide: the same step again, with the whole vocabulary
            out = self.runner.decode(tokens, positions, self.cache.source_mask[:n], feeds)
            for s in inexact:
                if not self._advance(s, self._scores(s, out), finished, dst, src):
                    raise RuntimeError("a search was inexact over the whole vocabulary")
        self.cache.reorder(dst, src, int(positions.max()) + 1)
        for s in finished:
            self._finish(s, s.search.finish_reason)
        return finished

    @staticmethod
    def _scores(s: Sequence, out: DecoderStep) -> Scores:
        rows = [slot.row for slot in s.slots]
        if out.logits is not None:
            return Scores(out.logits[rows])
        return Scores((out.top_logprobs if s.search.log_probs else out.top_logits)[rows], out.top_ids[rows])

    def _advance(self, s: Sequence, scores: Scores, finished: list, dst: list[int], src: list[int]) -> bool:
        """One search step for `s` and its bookkeeping; False (nothing changed) if it was inexact."""
        parents = s.search.step(scores)
        if parents is INEXACT:
            return False
        if parents is not None:
            rows = [slot.row for slot in s.slots]
            for row, parent in zip(rows, parents):
                if rows[parent] != row:
                    dst.append(row)
                    src.append(rows[parent])
        if s.on_token is not None and s.rows == 1:
            s.on_token(s, s.search.sequences[0][-1])
        if not s.search.done and s.cfg.stop and self._hit_stop(s):
            s.search.stop("stop")
        if s.search.done:
            finished.append(s)
        return True

    def cancel(self, sequence: Sequence) -> None:
        """Drop a sequence now (client gone, deadline passed); its rows are free for the next step."""
        if sequence in self.running:
            self._finish(sequence, "cancelled")

    def _hit_stop(self, s: Sequence) -> bool:
        text = self.codec.decode(s.search.output())
        return any(stop in text for stop in s.cfg.stop)

    def _finish(self, s: Sequence, reason: str) -> None:
        tokens = s.search.output()
        alignment = self._alignment(s, tokens) if s.return_alignment and tokens else None
        self.cache.release(s.slots)
        self.running.remove(s)
        text = self.codec.decode(tokens)
        if reason == "stop":
            cut = min(text.find(stop) for stop in s.cfg.stop if stop in text)
            text = text[:cut]
        s.result = Generation(text, tokens, len(s.input_ids), len(tokens), reason, alignment)

    def _alignment(self, s: Sequence, tokens: list[int]) -> list[list[float]]:
        """Cross-attention of each output token over the input tokens (one layer, mean over heads).

        One teacher-forced decoder pass over the final output, whatever the search: row i is the
        attention of the step that produced token i (as transformers' `cross_attentions`).
        """
        row = s.slots[0].row
        start = self.manifest.special_tokens.decoder_start_id
        inputs = np.array([[start, *tokens[:-1]]], dtype=np.int64)
        positions = np.arange(len(tokens), dtype=np.int64)[None, :]
        spec = self.manifest.spec
        empty = np.zeros((1, spec.kv_heads, 1, spec.head_dim), dtype=np.float32)  # masked: no valid slot
        cross = [buf[row : row + 1] for buf in self.cache.cross_kv]
        feeds = dict(zip(self.runner.cache_inputs, [empty] * len(self.cache.self_kv) + cross))
        weights = self.runner.cross_attention(inputs, positions, self.cache.source_mask[row : row + 1], feeds)
        layer = weights[0, self.manifest.alignment_layer, :, : len(s.input_ids)]
        return np.round(layer.astype(np.float64), 4).tolist()  # float64: JSON gets 0.7188, not 0.7188000082969666

    # -- offline use ---------------------------------------------------------------------------

    def generate(
        self,
        texts: list[str],
        options: GenerationOptions | dict | None = None,
        target_lang: str | None = None,
        truncate: bool = False,
        return_alignment: bool = False,
    ) -> list[Generation]:
        """Decode texts together (as many at once as the cache holds), through the same loop."""
        sequences = self.prepare(texts, options, target_lang, truncate, return_alignment=return_alignment)
        waiting = deque(sequences)
        while waiting or self.running:
            group = []
            free = self.cache.free
            while waiting and waiting[0].rows <= free:
                free -= waiting[0].rows
                group.append(waiting.popleft())
            self.admit(group)
            self.step()
        return [s.result for s in sequences]
