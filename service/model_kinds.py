"""What the step loop does differently for encoder-decoder and decoder-only models.

The engine (service/engine.py) runs one loop for both kinds: admit a group between steps, then
one decoder step for every running row. A `ModelKind` supplies the parts that differ, so that
nothing else asks which kind a model is:
- where a search's histories start (`prefix`): the decoder start token, or the prompt itself;
- how an admitted group gets its rows' cache (`admit`): one encoder pass writing cross-attention
  K/V, or one prefill pass writing the prompts' self-attention K/V;
- the decoder's own inputs of a step (`step_inputs`): the source mask, or which logits to compute;
- the text an output continues (`context`): nothing, or the end of the prompt, so that a token
  that starts with a space keeps it (SentencePiece drops it at the start of a decoded string).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from service.errors import InvalidOptions
from service.kv_cache import KVCache
from service.manifest import Manifest
from service.options import DecodingConfig
from service.results import Alignment
from service.runner import ModelRunner
from service.tokenizer import TextCodec

if TYPE_CHECKING:
    from service.engine import Sequence

CONTEXT_TOKENS = 5  # prompt tokens decoded before a decoder-only output's text (as vLLM's detokenizer)


class ModelKind(ABC):
    alignment = False  # whether outputs can be aligned with their inputs (cross-attention)

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.pad_id = manifest.special_tokens.pad_id

    def new_cache(self, rows: int) -> KVCache:
        spec = self.manifest.spec
        return KVCache(spec.decoder.layers, spec.kv_heads, spec.head_dim, rows, cross=not spec.decoder_only)

    @abstractmethod
    def prefix(self, input_ids: list[int]) -> list[int]:
        """The tokens a search's histories start with (its output follows them)."""

    def context(self, input_ids: list[int]) -> list[int]:
        """Tokens decoded before the output, whose text the output's continues."""
        return []

    def decoding(self, cfg: DecodingConfig, input_ids: list[int]) -> DecodingConfig:
        """The settings one input decodes with (a decoder-only model's context bounds its output)."""
        return cfg

    @abstractmethod
    def admit(self, sequences: list[Sequence], runner: ModelRunner, cache: KVCache) -> None:
        """Run the group's pass, give each sequence its cache rows and write them."""

    @abstractmethod
    def step_inputs(self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache) -> tuple[np.ndarray, ...]:
        """The decoder's inputs (in `graph.step_inputs` order) for one step of the running rows."""

    def align(self, s: Sequence, tokens: list[int], runner: ModelRunner, cache: KVCache, codec: TextCodec) -> Alignment:
        """Each output token's attention over the input tokens (`alignment` kinds only)."""
        raise InvalidOptions(f"model '{self.manifest.name}' has no cross-attention to align outputs with")

    def _padded(self, inputs: list[list[int]], width: int) -> np.ndarray:
        ids = np.full((len(inputs), width), self.pad_id, dtype=np.int64)
        for i, tokens in enumerate(inputs):
            ids[i, : len(tokens)] = tokens
        return ids


class EncoderDecoder(ModelKind):
    alignment = True

    def prefix(self, input_ids: list[int]) -> list[int]:
        return [self.manifest.special_tokens.decoder_start_id]

    def admit(self, sequences: list[Sequence], runner: ModelRunner, cache: KVCache) -> None:
        lengths = [len(s.input_ids) for s in sequences]
        longest = max(lengths)
        input_ids = self._padded([s.input_ids for s in sequences], longest)
        mask = (np.arange(longest)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
        cross = runner.encode(input_ids, mask)
        cache.ensure(cache.used + sum(s.rows for s in sequences), max(cache.past_cap, 1), longest)  # grow once
        for i, s in enumerate(sequences):
            s.slots = cache.allocate(s.rows)
            cache.write_cross(s.slots, cross, i, lengths[i])

    def step_inputs(self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache) -> tuple[np.ndarray, ...]:
        return tokens, positions, cache.source_mask[: len(tokens)]

    def align(self, s: Sequence, tokens: list[int], runner: ModelRunner, cache: KVCache, codec: TextCodec) -> Alignment:
        """Cross-attention of each output token over the input tokens (one layer, mean over heads).

        One teacher-forced decoder pass over the final output, whatever the search: row i is the
        attention of the step that produced token i (as transformers' `cross_attentions`).
        """
        row = s.slots[0].row
        start = self.manifest.special_tokens.decoder_start_id
        inputs = np.array([[start, *tokens[:-1]]], dtype=np.int64)
        positions = np.arange(len(tokens), dtype=np.int64)[None, :]
        spec = self.manifest.spec
        empty = np.zeros((1, spec.kv_heads, len(tokens), spec.head_dim), dtype=np.float32)  # room for the output
        cross = [buf[row : row + 1] for buf in cache.cross_kv]
        feeds = dict(zip(runner.cache_inputs, [empty] * len(cache.self_kv) + cross))
        weights = runner.cross_attention((inputs, positions, cache.source_mask[row : row + 1]), feeds)
        layer = weights[0, self.manifest.alignment_layer, :, : len(s.input_ids)]
        rounded = np.round(layer.astype(np.float64), 4).tolist()  # float64: JSON gets 0.7188, not 0.7188000082969666
        return Alignment(codec.tokens(s.input_ids), codec.tokens(tokens), rounded)


class DecoderOnly(ModelKind):
    """The prompt but its last token is prefilled at admission (right-padded: padding sits at
    positions after each prompt's, which causal masking hides and later tokens overwrite); the last
    prompt token is the input of the sequence's first step, as the start token is for a seq2seq
    model. So every token a search chooses comes from the same step loop."""

    def prefix(self, input_ids: list[int]) -> list[int]:
        return list(input_ids)

    def context(self, input_ids: list[int]) -> list[int]:
        return input_ids[-CONTEXT_TOKENS:]

    def decoding(self, cfg: DecodingConfig, input_ids: list[int]) -> DecodingConfig:
        room = self.manifest.spec.max_positions - len(input_ids)  # validation leaves at least 1
        return replace(cfg, max_new_tokens=room) if cfg.max_new_tokens > room else cfg

    def admit(self, sequences: list[Sequence], runner: ModelRunner, cache: KVCache) -> None:
        prompts = [s.input_ids[:-1] for s in sequences]
        longest = max(len(p) for p in prompts)
        cache.ensure(cache.used + sum(s.rows for s in sequences), longest + 1, 0)  # grow once, room for the step
        prefilled = None
        if longest:
            spec, n = self.manifest.spec, len(sequences)
            positions = np.broadcast_to(np.arange(longest, dtype=np.int64), (n, longest))
            no_logits = np.zeros((n, 0), dtype=np.int64)
            empty = np.zeros((n, spec.kv_heads, longest, spec.head_dim), dtype=cache.dtype)  # room for the prompts
            prefilled = runner.prefill(
                (self._padded(prompts, longest), positions, no_logits), dict.fromkeys(runner.cache_inputs, empty)
            )
        for i, s in enumerate(sequences):
            s.slots = cache.allocate(s.rows)
            if prompts[i]:
                cache.write_prompt(s.slots, prefilled, i, len(prompts[i]))

    def step_inputs(self, tokens: np.ndarray, positions: np.ndarray, cache: KVCache) -> tuple[np.ndarray, ...]:
        return tokens, positions, np.zeros((len(tokens), 1), dtype=np.int64)  # the logits of the one new token


def model_kind(manifest: Manifest) -> ModelKind:
    return DecoderOnly(manifest) if manifest.spec.decoder_only else EncoderDecoder(manifest)
