"""The model-directory contract between `export/` (writer) and `service/` (reader).

A model directory holds `manifest.json`, the ONNX graphs and `tokenizer.json`. The manifest says
everything the runtime must know without importing torch: the architecture spec (also used by
the exporter to build the PyTorch model), special ids, task, languages, generation defaults,
limits and file hashes. A directory whose manifest does not validate is refused with a message
naming the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import ModelLoadError

FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"

AttentionKind = Literal["full", "causal", "local", "local_global"]
Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]
PositionKind = Literal["sinusoidal", "learned", "relative", "rotary", "none"]
Task = Literal["translate", "summarize", "generate"]
TEXT_PLACEHOLDER = "{text}"  # where a summarize_prompt takes the text (service/prompts.py)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelativeBias(Strict):
    """T5-style bucketed relative position bias, computed by the stack's first layer and shared."""

    num_buckets: int = Field(32, ge=2)
    max_distance: int = Field(128, ge=2)


class AttentionSpec(Strict):
    """The self-attention pattern of one stack.

    `window` is a radius: a query at i sees keys j with |i - j| <= window (bidirectional) or
    0 <= i - j <= window (causal). With `local_global`, the first `global_tokens` positions see
    and are seen by every position (Longformer-style sparse attention).
    """

    kind: AttentionKind = "full"
    window: int | None = Field(None, ge=1)
    global_tokens: int = Field(0, ge=0)
    relative_bias: RelativeBias | None = None

    @model_validator(mode="after")
    def _check(self) -> AttentionSpec:
        if self.kind in ("local", "local_global") and self.window is None:
            raise ValueError(f"attention kind {self.kind!r} needs a window")
        if self.kind == "local_global" and self.global_tokens < 1:
            raise ValueError("attention kind 'local_global' needs global_tokens >= 1")
        if self.kind in ("full", "causal") and (self.window is not None or self.global_tokens):
            raise ValueError(f"attention kind {self.kind!r} takes no window or global_tokens")
        return self


class StackSpec(Strict):
    layers: int = Field(..., ge=1)
    attention: AttentionSpec = AttentionSpec()


class Rotary(Strict):
    """Rotary position embeddings (RoPE) as transformers computes them for Llama: inverse
    frequencies theta^(-2i/d) over the whole head, rescaled by `scaling` ('linear': divided by
    `factor`; 'llama3': Llama 3.1's per-band rescaling between `low_freq_factor` and
    `high_freq_factor` wavelengths of `original_max_positions`). Scalings that depend on the
    sequence length (dynamic NTK) or scale the attention (YaRN, LongRoPE) are not expressed."""

    theta: float = Field(10000.0, gt=0)
    scaling: Literal["none", "linear", "llama3"] = "none"
    factor: float = Field(1.0, gt=0)
    low_freq_factor: float = Field(1.0, gt=0)
    high_freq_factor: float = Field(4.0, gt=0)
    original_max_positions: int | None = Field(None, ge=1, description="llama3: the pretraining context")

    @model_validator(mode="after")
    def _check(self) -> Rotary:
        if self.scaling == "llama3" and (
            self.original_max_positions is None or self.high_freq_factor <= self.low_freq_factor
        ):
            raise ValueError("llama3 scaling needs original_max_positions and high_freq_factor > low_freq_factor")
        return self


class ModelSpec(Strict):
    """Enough architecture to express Marian, BART/mBART, Pegasus, T5 (encoder-decoder) and
    GPT-2, Llama, Qwen2 (decoder-only: no `encoder`) exactly."""

    vocab_size: int = Field(..., ge=2)
    d_model: int = Field(..., ge=1)
    n_heads: int = Field(..., ge=1)
    n_kv_heads: int | None = Field(None, ge=1, description="K/V heads (GQA/MQA); default n_heads")
    d_head: int | None = Field(None, ge=1, description="default d_model // n_heads")
    d_ff: int = Field(..., ge=1)
    encoder: StackSpec | None = Field(..., description="None: a decoder-only model")
    decoder: StackSpec
    activation: Activation = "relu"
    gated_ffn: bool = False
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    pre_norm: bool = False
    final_norm: bool = False
    embedding_norm: bool = False
    scale_embedding: bool = False
    positions: PositionKind = "sinusoidal"
    rotary: Rotary | None = Field(None, description="with positions 'rotary'")
    position_offset: int = Field(0, ge=0, description="learned table index = position + offset (BART: 2)")
    max_positions: int = Field(512, ge=1)
    attention_scale: float | None = Field(None, description="default 1/sqrt(d_head); T5 uses 1.0")
    qkv_bias: bool = True
    out_bias: bool | None = Field(None, description="bias of the attention output projection; default qkv_bias")
    ffn_bias: bool = True
    shared_embeddings: bool = True
    tie_lm_head: bool = True
    lm_head_scale: float = 1.0
    final_logits_bias: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def decoder_only(self) -> bool:
        return self.encoder is None

    @property
    def attention_out_bias(self) -> bool:
        return self.qkv_bias if self.out_bias is None else self.out_bias

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.n_heads % self.kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads unless d_head is given")
        if self.decoder.attention.kind not in ("causal", "local"):
            raise ValueError("decoder attention must be 'causal' or 'local' (causal local window)")
        if self.encoder is not None and self.encoder.attention.kind == "causal":
            raise ValueError("encoder attention cannot be causal")
        if self.positions == "relative" and (self.encoder is None or self.encoder.attention.relative_bias is None):
            raise ValueError("positions 'relative' needs an encoder and attention.relative_bias on each stack")
        if (self.positions == "rotary") != (self.rotary is not None):
            raise ValueError("positions 'rotary' and the rotary settings go together")
        if self.rotary is not None and self.head_dim % 2:
            raise ValueError("rotary positions need an even head size")
        if self.tie_lm_head and not self.shared_embeddings:
            raise ValueError("tie_lm_head needs shared_embeddings")
        return self


class SpecialTokens(Strict):
    pad_id: int = Field(..., ge=0)
    eos_id: int = Field(..., ge=0)
    extra_eos_ids: list[int] = Field([], description="further tokens that end an output (transformers' EOS list)")
    decoder_start_id: int | None = Field(None, ge=0, description="the first decoder token (encoder-decoder models)")
    unk_id: int | None = Field(None, ge=0)


class LanguageTags(Strict):
    """How the target language is chosen, and how the source language is marked.

    `source_prefix`: the tag token starts the source (Marian multilingual `>>de<<`, MADLAD's
    `<2de>`, heed's own models); `decoder_forced`: the tag is forced as the first generated token
    (mBART, M2M100, NLLB). `source_tag`: where the source language's own tag (one of `tokens`)
    goes, for models that read it (M2M100 and NLLB: `before` the text; NLLB's legacy_behaviour:
    `after` its EOS); `default_source` is the source language of requests that name none.
    `lead_ids` go before a `source_prefix` tag: what the checkpoint's tokenizer writes in front of
    it when the tag starts the text (transformers >= 5.25 tokenizes MADLAD's `<2de> text` as
    sentencepiece does, `▁ <2de> ▁text`; before, as `<2de> ▁text`).
    """

    placement: Literal["source_prefix", "decoder_forced"]
    tokens: dict[str, int]
    default: str | None = None
    source_tag: Literal["before", "after"] | None = None
    default_source: str | None = None
    lead_ids: list[int] = []

    @model_validator(mode="after")
    def _check(self) -> LanguageTags:
        for field in ("default", "default_source"):
            code = getattr(self, field)
            if code is not None and code not in self.tokens:
                raise ValueError(f"{field} {code!r} is not one of the tokens")
        return self


class ChatTemplate(Strict):
    """The checkpoint's chat template (Jinja2, from tokenizer_config.json) and the special tokens
    it refers to (`bos_token`, `eos_token`, ...: their strings, as transformers passes them)."""

    template: str = Field(..., min_length=1)
    tokens: dict[str, str] = {}


class GenerationDefaults(Strict):
    """The decoding a request gets for the options it leaves out (`service.validation.resolve`).

    `do_sample` says whether such a request samples (Qwen2.5- and Llama-3-Instruct checkpoints do,
    as transformers' `generate` does with their generation config); `temperature`, `top_k` (0: no
    top-k) and `top_p` are the sampler's settings whenever a request samples, and are ignored by
    greedy and beam search, as transformers ignores them with `do_sample=False`. Manifests written
    before these fields existed read as greedy, unchanged.
    """

    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    beam_size: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    length_penalty: float = 1.0
    early_stopping: bool = False
    no_repeat_ngram_size: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    bad_words_ids: list[list[int]] = []
    forced_bos_id: int | None = None
    forced_eos_id: int | None = None

    @model_validator(mode="after")
    def _check(self) -> GenerationDefaults:
        if self.do_sample and self.beam_size > 1:
            raise ValueError("do_sample with beam_size > 1 (beam sampling) is not supported")
        return self


class Limits(Strict):
    max_input_tokens: int = Field(..., ge=1)
    max_output_tokens: int = Field(..., ge=1)


class SharedTensor(Strict):
    """A tensor of the weights file that more than one graph reads (the vocabulary matrix): the
    runner hands every session the same memory (service/runner.py)."""

    offset: int = Field(..., ge=0)
    dtype: Literal["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"]
    shape: list[int]


class ModelFiles(Strict):
    encoder: str | None = Field("encoder.onnx", description="None for a decoder-only model")
    decoder: str = "decoder.onnx"
    tokenizer: str = "tokenizer.json"
    weights: str | None = Field(None, description="the graphs' external data, each tensor once (export/compact.py)")
    shared: dict[str, SharedTensor] = Field({}, description="initializers of the weights file that several graphs read")

    @property
    def graphs(self) -> list[str]:
        return [name for name in (self.encoder, self.decoder) if name is not None]

    @property
    def hashed(self) -> list[str]:
        """Every file the model's outputs depend on."""
        return [*self.graphs, *([self.weights] if self.weights else []), self.tokenizer]


class Manifest(Strict):
    format_version: Literal[2] = FORMAT_VERSION
    name: str = Field(..., min_length=1)
    task: Task
    architecture: str = Field(..., description="where the weights came from: heed, marian, bart, t5, ...")
    spec: ModelSpec
    special_tokens: SpecialTokens
    languages: LanguageTags | None = None
    source_languages: list[str] = []
    generation: GenerationDefaults = GenerationDefaults()
    limits: Limits
    quantization: Literal["none", "int8"] = "none"
    files: ModelFiles = ModelFiles()
    sha256: dict[str, str] = Field(default_factory=dict, description="file name -> hex digest")
    parameters: int = Field(0, ge=0)
    alignment_layer: int = Field(-1, description="decoder layer whose cross-attention is returned as alignment")
    chat: ChatTemplate | None = Field(None, description="how /v1/chat/completions renders messages into a prompt")
    summarize_prompt: str | None = Field(
        None, description="decoder-only: the prompt of /v1/summarize, {text} where the text goes (service/prompts.py)"
    )

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        layers = self.spec.decoder.layers
        if not -layers <= self.alignment_layer < layers:
            raise ValueError(f"alignment_layer must be in [{-layers}, {layers})")
        if self.summarize_prompt is not None and TEXT_PLACEHOLDER not in self.summarize_prompt:
            raise ValueError(f"summarize_prompt must contain {TEXT_PLACEHOLDER}, where the text to summarize goes")
        if self.spec.decoder_only:
            if self.files.encoder is not None or self.languages is not None:
                raise ValueError("a decoder-only model has no encoder graph and no target languages")
            if self.limits.max_input_tokens >= self.spec.max_positions:
                raise ValueError("a decoder-only model's max_input_tokens must leave room in its context to generate")
        elif self.files.encoder is None or self.special_tokens.decoder_start_id is None:
            raise ValueError("an encoder-decoder model needs files.encoder and special_tokens.decoder_start_id")
        return self

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every token that ends an output, the model's own EOS first."""
        return (self.special_tokens.eos_id, *self.special_tokens.extra_eos_ids)

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: Path, verify_hashes: bool = True) -> Manifest:
    """Read and validate a model directory's manifest; every failure is a ModelLoadError."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no {MANIFEST_FILE}")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ModelLoadError(f"{path}: field '{where}': {first['msg']}") from e
    names = manifest.files.hashed
    missing = [name for name in names if not (path.parent / name).is_file()]
    if missing:
        raise ModelLoadError(f"{directory}: missing file {', '.join(missing)}")
    for name in names:
        expected = manifest.sha256.get(name)
        if verify_hashes and expected and file_digest(path.parent / name) != expected:
            raise ModelLoadError(f"{directory}: {name} does not match its sha256 in the manifest")
    return manifest
