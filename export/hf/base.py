"""The converter interface, its registry, and what every converter shares: reading a local
Hugging Face checkpoint (config, weights) and mapping its generation config to heed's defaults.

A converter knows one family of `model_type`s. It maps the HF config to a `ModelSpec`, the HF
state dict to `Seq2SeqModel` parameter names, and the HF tokenizer files to one `tokenizer.json`.
Everything a converter cannot express is refused with a `ConversionError` that says what and why,
so a user never gets a model that silently generates something else than `transformers` would.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor

from service.manifest import ChatTemplate, GenerationDefaults, LanguageTags, ModelSpec, SpecialTokens

ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
}


TRANSFORMERS_TOP_K = 50  # `generate`'s top_k when the generation config names none (GenerationConfig defaults)


class ConversionError(ValueError):
    """A checkpoint heed cannot convert exactly; the message names the file, field or tensor."""


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ConversionError(f"activation {name!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})")
    return ACTIVATIONS[name]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConversionError(f"{path.parent}: missing {path.name}") from e
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e


def load_weights(directory: Path) -> dict[str, Tensor]:
    """The checkpoint's tensors, from safetensors (single or sharded) or, only where no
    safetensors exist, `pytorch_model.bin` read with `weights_only=True` (no arbitrary pickle)."""
    directory = Path(directory)
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = directory / index_name
        files = sorted(set(read_json(index)["weight_map"].values())) if index.is_file() else [single]
        if all((directory / f).is_file() for f in files):
            tensors: dict[str, Tensor] = {}
            for f in files:
                tensors.update(_read_tensor_file(directory / f))
            return tensors
    raise ConversionError(
        f"{directory}: no weights found (expected model.safetensors, a sharded model.safetensors.index.json, "
        "or pytorch_model.bin)"
    )


def _read_tensor_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable or unsafe pickles
        raise ConversionError(f"{path}: cannot be read as a weights-only PyTorch state dict ({e})") from e
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class Weights:
    """HF tensors by name, with the prefixes checkpoints disagree on (`model.`) made optional and
    tied weights that `save_pretrained` leaves out found under their other names."""

    def __init__(self, tensors: dict[str, Tensor], prefix: str = ""):
        self.tensors = {(k[len(prefix) :] if prefix and k.startswith(prefix) else k): v for k, v in tensors.items()}

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, *names: str) -> Tensor:
        """The first of `names` that the checkpoint holds (alternatives are tied copies)."""
        for name in names:
            if name in self.tensors:
                return self.tensors[name]
        raise ConversionError(f"checkpoint has no tensor {' or '.join(repr(n) for n in names)}")


@dataclass
class Checkpoint:
    """A local HF checkpoint folder: its config and its generation config (None without
    generation_config.json)."""

    directory: Path
    config: dict[str, Any]
    generation: dict[str, Any] | None = None

    @classmethod
    def open(cls, directory: Path) -> Checkpoint:
        directory = Path(directory)
        if not directory.is_dir():
            raise ConversionError(f"{directory}: not a directory")
        config = read_json(directory / "config.json")
        gen_path = directory / "generation_config.json"
        generation = read_json(gen_path) if gen_path.is_file() else None
        return cls(directory, config, generation)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    def setting(self, key: str, default: Any = None) -> Any:
        """A generation setting as transformers' `generate` sees it: from generation_config.json
        when the folder has one (config.json's copies are then ignored), else from config.json."""
        source = self.config if self.generation is None else self.generation
        return source.get(key, default)

    def token_id(self, key: str) -> Any:
        """A special token id: the generation config's, else the model config's."""
        value = self.setting(key)
        return self.config.get(key) if value is None else value


def first_id(value: Any) -> int | None:
    """transformers allows a list of EOS ids; heed decodes with one (the first, the model's own)."""
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def generation_defaults(ckpt: Checkpoint, pad_id: int) -> GenerationDefaults:
    """The checkpoint's generation config as heed's manifest defaults.

    transformers counts `max_length`/`min_length` with the decoder start token; heed counts new
    tokens, hence the `- 1`. `early_stopping="never"` (a different stopping rule for beams) and
    sampling beam search (`do_sample` with `num_beams` > 1) have no heed equivalent and are refused
    rather than silently changed. The sampler's settings are read as `generate` reads them (below).
    """
    values: dict[str, Any] = {}
    if ckpt.setting("max_new_tokens") is not None:
        values["max_new_tokens"] = int(ckpt.setting("max_new_tokens"))
    elif ckpt.setting("max_length") is not None:
        values["max_new_tokens"] = max(int(ckpt.setting("max_length")) - 1, 1)
    if ckpt.setting("min_new_tokens") is not None:
        values["min_new_tokens"] = int(ckpt.setting("min_new_tokens"))
    elif ckpt.setting("min_length") is not None:
        values["min_new_tokens"] = max(int(ckpt.setting("min_length")) - 1, 0)
    if ckpt.setting("num_beams") is not None:
        values["beam_size"] = int(ckpt.setting("num_beams"))
    for key in ("length_penalty", "no_repeat_ngram_size", "repetition_penalty"):
        if ckpt.setting(key) is not None:
            values[key] = ckpt.setting(key)
    early = ckpt.setting("early_stopping")
    if early == "never":
        raise ConversionError("generation config early_stopping='never' is not supported (use true or false)")
    if early is not None:
        values["early_stopping"] = bool(early)
    bad = ckpt.setting("bad_words_ids")
    if bad:
        values["bad_words_ids"] = [[int(t) for t in word] for word in bad]
    elif ckpt.model_type == "marian":
        # Marian checkpoints never emit their pad token (transformers' Marian configs ban it).
        values["bad_words_ids"] = [[pad_id]]
    for key, name in (("forced_bos_token_id", "forced_bos_id"), ("forced_eos_token_id", "forced_eos_id")):
        if ckpt.setting(key) is not None:
            values[name] = int(ckpt.setting(key))
    values |= sampling_defaults(ckpt)
    try:
        return GenerationDefaults(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = "".join(f" {p}" for p in first["loc"])
        raise ConversionError(f"{ckpt.directory}: generation config{where}: {first['msg']}") from e


def sampling_defaults(ckpt: Checkpoint) -> dict[str, Any]:
    """`do_sample`, `temperature`, `top_k` and `top_p` as transformers' `generate` samples with them.

    A setting the checkpoint leaves out takes transformers' global default (its `top_k` is 50, not
    heed's 0, so a checkpoint that samples without naming a top_k samples as it does in
    transformers). Without `do_sample` the others are only what a request that asks to sample gets,
    as transformers ignores them then; temperature 0 (greedy in some configs) is left out then, and
    refused with `do_sample`, as transformers refuses it.
    """
    do_sample = bool(ckpt.setting("do_sample", False))
    values: dict[str, Any] = {"do_sample": do_sample, "top_k": TRANSFORMERS_TOP_K}
    for key in ("temperature", "top_k", "top_p"):
        if ckpt.setting(key) is not None:
            values[key] = ckpt.setting(key)
    if values.get("temperature") == 0 and not do_sample:
        del values["temperature"]
    return values


@dataclass
class Conversion:
    """Everything `write_model_dir` needs, produced by a converter."""

    architecture: str
    spec: ModelSpec
    state_dict: dict[str, Tensor]
    tokenizer: Tokenizer
    special_tokens: SpecialTokens
    generation: GenerationDefaults
    languages: LanguageTags | None = None
    chat: ChatTemplate | None = None


class Converter(ABC):
    """One source architecture family. Subclasses set `model_types` and register themselves."""

    model_types: ClassVar[tuple[str, ...]] = ()
    architecture: ClassVar[str] = ""

    @abstractmethod
    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        """The heed architecture that computes what the HF model computes (some choices, such as
        an untied LM head, show only in which tensors the checkpoint stores)."""

    @abstractmethod
    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        """HF tensors under `Seq2SeqModel` parameter names."""

    @abstractmethod
    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        """The checkpoint's tokenizer as one `tokenizers` object (source side, with EOS appended)."""

    def languages(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> LanguageTags | None:
        """Target-language tags, for multilingual checkpoints; None otherwise."""
        return None

    def special_tokens(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> SpecialTokens:
        config = ckpt.config
        missing = [k for k in ("pad_token_id", "eos_token_id") if first_id(config.get(k)) is None]
        if missing:
            raise ConversionError(f"{ckpt.directory}/config.json: missing {', '.join(missing)}")
        pad, eos = first_id(config["pad_token_id"]), first_id(config["eos_token_id"])
        start = first_id(ckpt.token_id("decoder_start_token_id"))
        if start is None:
            start = self.default_decoder_start(ckpt, pad, eos)
        unk = tokenizer.token_to_id("<unk>")
        return SpecialTokens(pad_id=pad, eos_id=eos, decoder_start_id=start, unk_id=unk)

    def default_decoder_start(self, ckpt: Checkpoint, pad: int, eos: int) -> int:
        """transformers' fallback when no decoder_start_token_id is set: the BOS token."""
        bos = first_id(ckpt.token_id("bos_token_id"))
        if bos is None:
            raise ConversionError(f"{ckpt.directory}: config has neither decoder_start_token_id nor bos_token_id")
        return bos

    def convert(self, ckpt: Checkpoint) -> Conversion:
        weights = Weights(load_weights(ckpt.directory))
        spec = self.spec(ckpt, weights)
        state = self.state_dict(ckpt, spec, weights)
        tokenizer = self.tokenizer(ckpt)
        if tokenizer.get_vocab_size(with_added_tokens=True) > spec.vocab_size:
            raise ConversionError(
                f"{ckpt.directory}: the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, "
                f"more than the model's vocabulary of {spec.vocab_size}"
            )
        special = self.special_tokens(ckpt, tokenizer)
        return Conversion(
            architecture=self.architecture,
            spec=spec,
            state_dict=state,
            tokenizer=tokenizer,
            special_tokens=special,
            generation=generation_defaults(ckpt, special.pad_id),
            languages=self.languages(ckpt, tokenizer),
        )


REGISTRY: dict[str, type[Converter]] = {}


def register(cls: type[Converter]) -> type[Converter]:
    for model_type in cls.model_types:
        REGISTRY[model_type] = cls
    return cls


def converter_for(ckpt: Checkpoint) -> Converter:
    if ckpt.model_type not in REGISTRY:
        supported = ", ".join(sorted(REGISTRY))
        found = ckpt.model_type or "(no model_type in config.json)"
        raise ConversionError(f"{ckpt.directory}: architecture {found!r} is not supported; supported: {supported}")
    return REGISTRY[ckpt.model_type]()
