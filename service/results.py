"""What decoding a text produces: its `Generation` (and, when asked, its cross-attention `Alignment`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Alignment:
    source_tokens: list[str]  # the input's tokens as the model read them (language tag, EOS)
    target_tokens: list[str]  # the output tokens (as in token_ids)
    weights: list[list[float]]  # [output token][input token] cross-attention of one layer, mean over heads


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    input_tokens: int
    output_tokens: int
    finish_reason: str  # eos | length | stop | cancelled
    alignment: Alignment | None = None
    alternatives: list[str] = field(default_factory=list)  # the next best outputs' texts (num_return_sequences)
