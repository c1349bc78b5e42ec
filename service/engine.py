"""The engine: one model's tokenizer, runner and KV cache, and the iteration-level step loop.

It executes what the scheduler (service/scheduler.py) decides: sequences join (`admit`: one
encoder pass for the group, cross K/V written to their rows; or, for a decoder-only model, one
prefill pass writing the prompts' K/V) and leave (finished, stopped or cancelled: rows freed at
once) between decoder steps; every `step` runs the decoder once for all running rows, new and old
together. What differs between the two kinds of model is the `ModelKind`'s (service/model_kinds.py).
The offline `generate` and the server's worker drive it with the same scheduler, so the CLI and
the server give the same tokens. Encoder-decoder and decoder-only models run side by side in
one process: each has its own engine.

Not thread-safe: one thread (the worker's, or the caller's) owns an engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.detokenizer import Detokenizer, continuation
from service.documents import rejoin
from service.errors import InvalidOptions
from service.faults import inject_decoder_fault
from service.kv_cache import Slot
from service.manifest import Manifest, load_manifest
from service.model_kinds import ModelKind, model_kind
from service.options import DecodingConfig, GenerationOptions
from service.results import Generation
from service.runner import DecoderStep, ModelRunner
from service.scheduler import Request, Scheduler
from service.search import INEXACT, Scores, Search, make_search
from service.settings import EngineConfig
from service.tokenizer import TextCodec
from service.validation import ModelLimits, RawRequest, ValidRequest, validate

if TYPE_CHECKING:
    from service.scheduler import SchedulerOutput

TokenCallback = Callable[[int, str], None]  # (token id, the text it completes)


class Sequence:
    """One input text on its way through the engine."""

    def __init__(
        self,
        input_ids: list[int],
        search: Search,
        cfg: DecodingConfig,
        on_token: TokenCallback | None = None,
        return_alignment: bool = False,
        detokenizer: Detokenizer | None = None,
        context: list[int] = (),
    ):
        self.input_ids, self.search, self.cfg, self.on_token = input_ids, search, cfg, on_token
        self.return_alignment = return_alignment
        self.detokenizer = detokenizer  # one-row searches that stream or have stop strings
        self.context = context  # tokens whose text the output's continues (`ModelKind.context`)
        self.checked: list[int] = []  # a beam's best output when its stop strings were last checked
        self.slots: list[Slot] = []
        self.result: Generation | None = None

    @property
    def rows(self) -> int:
        return self.search.rows


def build_sequences(
    valid: ValidRequest, manifest: Manifest, codec: TextCodec, on_token: TokenCallback | None = None
) -> list[Sequence]:
    """The sequences of a valid request, each with its search (seeded per input) and, where it
    streams or stops on strings, its incremental detokenizer."""
    kind = model_kind(manifest)
    if valid.return_alignment and not kind.alignment:
        raise InvalidOptions(f"model '{manifest.name}' has no cross-attention: it cannot return an alignment")
    sequences = []
    for i, ids in enumerate(valid.inputs):
        cfg = kind.decoding(valid.config, ids)
        rng = np.random.default_rng(None if cfg.seed is None else [cfg.seed, i])
        search = make_search(cfg, kind.prefix(ids), manifest.eos_ids, rng)
        context = kind.context(ids)
        incremental = search.rows == 1 and (on_token is not None or bool(cfg.stop))
        detokenizer = Detokenizer(codec.decode, context) if incremental else None
        sequences.append(Sequence(ids, search, cfg, on_token, valid.return_alignment, detokenizer, context))
    return sequences


@dataclass
class StepResult:
    """What one executed plan produced (for the scheduler's update and the metrics)."""

    finished: list[Sequence]
    rows: int = 0  # rows in the decoder step; 0: no step ran
    encode_seconds: float | None = None  # the admitted group's encoder (or prefill) pass, if any
    step_seconds: float | None = None


class Engine:
    def __init__(
        self,
        directory: Path,
        config: EngineConfig | None = None,
        manifest: Manifest | None = None,
        codec: TextCodec | None = None,
    ):
        config = config or EngineConfig()
        self.directory = Path(directory)
        self.manifest = manifest or load_manifest(self.directory)
        self.limits = ModelLimits.of(self.manifest, config)
        self.codec = codec or TextCodec(self.directory / self.manifest.files.tokenizer)
        self.runner = ModelRunner(
            self.directory,
            self.manifest,
            config.provider,
            config.intra_op_threads,
            config.ort_spinning,
            config.int8_kernels,
        )
        self.kind: ModelKind = model_kind(self.manifest)
        self.cache = self.kind.new_cache(config.kv_rows)
        self.running: list[Sequence] = []

    @property
    def name(self) -> str:
        return self.manifest.name

    def validate(
        self,
        texts: list[str],
        options: GenerationOptions | dict | None = None,
        target_lang: str | None = None,
        truncate: bool = False,
        return_alignment: bool = False,
        split_sentences: bool = False,
        source_lang: str | None = None,
    ) -> ValidRequest:
        """Validate and tokenize an offline request (no server caps); raises a `RequestError`."""
        request = RawRequest(
            texts,
            GenerationOptions.parse(options),
            target_lang,
            source_lang,
            truncate=truncate,
            return_alignment=return_alignment,
            split_sentences=split_sentences,
        )
        return validate(request, self.manifest, self.codec, self.limits)

    def prepare(self, texts: list[str], *args, **kwargs) -> list[Sequence]:
        """The sequences of an offline request (arguments as `validate`)."""
        return build_sequences(self.validate(texts, *args, **kwargs), self.manifest, self.codec)

    def inject_decoder_fault(self, run: int) -> None:
        """Testing only (`HEED_FAULT_DECODER_RUN`): the `run`-th decoder run from now fails in ONNX Runtime."""
        inject_decoder_fault(self.runner, run)

    # -- the step loop -------------------------------------------------------------------------

    def execute(self, plan: SchedulerOutput) -> StepResult:
        """Run one iteration the scheduler planned: cancel, admit, one decoder step."""
        for sequence in plan.cancelled:
            self.cancel(sequence)
        result = StepResult([])
        if plan.admitted:
            start = time.perf_counter()
            self.admit(plan.admitted)
            result.encode_seconds = time.perf_counter() - start
        if self.running:
            result.rows, start = self.cache.used, time.perf_counter()
            result.finished = self.step()
            result.step_seconds = time.perf_counter() - start
        return result

    def admit(self, sequences: list[Sequence]) -> None:
        """Encode (or prefill) a group of new sequences at once and give them cache rows; they
        take part in the next step. The caller (the scheduler) checks that the cache has the rows."""
        if sequences:
            self.kind.admit(sequences, self.runner, self.cache)
            self.running.extend(sequences)

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
                positions[slot.row, 0] = s.search.position
        self.cache.ensure(n, int(positions.max()) + 1, self.cache.source_cap)
        feeds = self.cache.decoder_feeds(self.runner.cache_inputs)
        inputs = self.kind.step_inputs(tokens, positions, self.cache)
        wanted = [s.search.candidates for s in self.running]
        top_k = 0 if 0 in wanted else max(wanted)
        logprobs = any(s.search.log_probs for s in self.running)
        out = self.runner.decode(inputs, feeds, top_k, logprobs)  # writes the new K/V into the cache
        finished, dst, src = [], [], []  # beam rows that continue another row of their group
        inexact = [s for s in self.running if not self._advance(s, self._scores(s, out), finished, dst, src)]
        if inexact:  # their K best tokens could not decide: the same step again, with the whole vocabulary
            out = self.runner.decode(inputs, feeds)
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
        self._follow_text(s)
        if s.search.done:
            finished.append(s)
        return True

    def cancel(self, sequence: Sequence) -> None:
        """Drop a sequence now (client gone, deadline passed); its rows are free for the next step."""
        if sequence in self.running:
            self._finish(sequence, "cancelled")

    def _follow_text(self, s: Sequence) -> None:
        """Stream the text of a step's token and check the stop strings, without decoding the
        whole output each step: a one-row search's text grows by its detokenizer's deltas; a beam's
        best output changes as a whole, and is decoded only when it changed."""
        if s.detokenizer is not None:
            token = s.search.sequences[0][-1]
            delta = s.detokenizer.push(token)
            if s.on_token is not None:
                s.on_token(token, delta)
            if delta and s.cfg.stop and not s.search.done and _has_stop(s.detokenizer.text, len(delta), s.cfg.stop):
                s.search.stop("stop")
        elif s.cfg.stop and not s.search.done:
            best = s.search.output()
            if best != s.checked:
                s.checked = best
                if any(stop in continuation(self.codec.decode, s.context, best) for stop in s.cfg.stop):
                    s.search.stop("stop")

    def _finish(self, s: Sequence, reason: str) -> None:
        tokens = s.search.output()
        aligned = s.return_alignment and tokens
        alignment = self.kind.align(s, tokens, self.runner, self.cache, self.codec) if aligned else None
        self.cache.release(s.slots)
        self.running.remove(s)
        text = continuation(self.codec.decode, s.context, tokens)
        if reason == "stop":
            text = text[: min((text.find(stop) for stop in s.cfg.stop if stop in text), default=len(text))]
        alternatives = s.search.alternatives(s.cfg.num_return_sequences - 1)
        others = [continuation(self.codec.decode, s.context, t) for t in alternatives]
        s.result = Generation(text, tokens, len(s.input_ids), len(tokens), reason, alignment, others)

    # -- offline use ---------------------------------------------------------------------------

    def generate(
        self,
        texts: list[str],
        options: GenerationOptions | dict | None = None,
        target_lang: str | None = None,
        truncate: bool = False,
        return_alignment: bool = False,
        split_sentences: bool = False,
        source_lang: str | None = None,
    ) -> list[Generation]:
        """Decode texts together (as many at once as the cache holds), admitted by the scheduler
        the server uses."""
        if self.running:
            raise RuntimeError("Engine.generate needs an idle engine")
        valid = self.validate(texts, options, target_lang, truncate, return_alignment, split_sentences, source_lang)
        sequences = build_sequences(valid, self.manifest, self.codec)
        scheduler = Scheduler(self.cache.max_rows, name=self.name)
        scheduler.add(Request("offline", sequences))
        while not scheduler.idle:
            plan = scheduler.schedule()
            scheduler.update(plan, self.execute(plan).finished)
        results = [s.result for s in sequences]
        return rejoin(valid.documents, results) if valid.documents else results


def _has_stop(text: str, new: int, stops: tuple[str, ...]) -> bool:
    """Whether a stop string ends within the last `new` characters of `text`."""
    start = max(0, len(text) - new - max(len(stop) for stop in stops) + 1)
    return any(stop in text[start:] for stop in stops)
