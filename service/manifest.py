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
PositionKind = Literal["sinusoidal", "learned", "relative", "none"]
Task = Literal["translate", "summarize", "generate"]


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


class ModelSpec(Strict):
    """Enough architecture to express Marian, BART/mBART, Pegasus and T5 exactly."""

    vocab_size: int = Field(..., ge=2)
    d_model: int = Field(..., ge=1)
    n_heads: int = Field(..., ge=1)
    n_kv_heads: int | None = Field(None, ge=1, description="K/V heads (GQA/MQA); default n_heads")
    d_head: int | None = Field(None, ge=1, description="default d_model // n_heads")
    d_ff: int = Field(..., ge=1)
    encoder: StackSpec
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
    position_offset: int = Field(0, ge=0, description="learned table index = position + offset (BART: 2)")
    max_positions: int = Field(512, ge=1)
    attention_scale: float | None = Field(None, description="default 1/sqrt(d_head); T5 uses 1.0")
    qkv_bias: bool = True
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

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.n_heads % self.kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads unless d_head is given")
        if self.decoder.attention.kind not in ("causal", "local"):
            raise ValueError("decoder attention must be 'causal' or 'local' (causal local window)")
        if self.encoder.attention.kind == "causal":
            raise ValueError("encoder attention cannot be causal")
        if self.positions == "relative" and self.encoder.attention.relative_bias is None:
            raise ValueError("positions 'relative' needs attention.relative_bias on each stack")
        if self.tie_lm_head and not self.shared_embeddings:
            raise ValueError("tie_lm_head needs shared_embeddings")
        return self


class SpecialTokens(Strict):
    pad_id: int = Field(..., ge=0)
    eos_id: int = Field(..., ge=0)
    decoder_start_id: int = Field(..., ge=0)
    unk_id: int | None = Field(None, ge=0)


class LanguageTags(Strict):
    """How the target language is chosen.

    `source_prefix`: the tag token starts the source (Marian multilingual `>>de<<`, heed's own
    models); `decoder_forced`: the tag is forced as the first generated token (mBART, NLLB).
    """

    placement: Literal["source_prefix", "decoder_forced"]
    tokens: dict[str, int]
    default: str | None = None


class ChatTemplate(Strict):
    """The checkpoint's chat template (Jinja2, from tokenizer_config.json) and the special tokens
    it refers to (`bos_token`, `eos_token`, ...: their strings, as transformers passes them)."""

    template: str = Field(..., min_length=1)
    tokens: dict[str, str] = {}


class GenerationDefaults(Strict):
    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    beam_size: int = Field(1, ge=1)
    length_penalty: float = 1.0
    early_stopping: bool = False
    no_repeat_ngram_size: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    bad_words_ids: list[list[int]] = []
    forced_bos_id: int | None = None
    forced_eos_id: int | None = None


class Limits(Strict):
    max_input_tokens: int = Field(..., ge=1)
    max_output_tokens: int = Field(..., ge=1)


class ModelFiles(Strict):
    encoder: str = "encoder.onnx"
    decoder: str = "decoder.onnx"
    tokenizer: str = "tokenizer.json"


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

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        layers = self.spec.decoder.layers
        if not -layers <= self.alignment_layer < layers:
            raise ValueError(f"alignment_layer must be in [{-layers}, {layers})")
        return self

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
    names = (manifest.files.encoder, manifest.files.decoder, manifest.files.tokenizer)
    missing = [name for name in names if not (path.parent / name).is_file()]
    if missing:
        raise ModelLoadError(f"{directory}: missing file {', '.join(missing)}")
    for name in names:
        expected = manifest.sha256.get(name)
        if verify_hashes and expected and file_digest(path.parent / name) != expected:
            raise ModelLoadError(f"{directory}: {name} does not match its sha256 in the manifest")
    return manifest
