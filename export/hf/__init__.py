"""Import local Hugging Face checkpoints: one converter per source architecture (see base.py).

export_checkpoint(Path("opus-mt-en-de"), Path("models/en-de"), name="en-de", task="translate")
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.decoder_model import DecoderOnlyModel
from export.hf import bart, gpt2, llama, m2m100, marian, qwen2, t5  # noqa: F401  (importing registers the converters)
from export.hf.base import REGISTRY, Checkpoint, Conversion, ConversionError, converter_for
from export.model import Seq2SeqModel
from export.package import write_model_dir
from service.manifest import Manifest, Task

__all__ = ["REGISTRY", "ConversionError", "build_model", "convert", "export_checkpoint"]


def convert(hf_dir: Path) -> Conversion:
    ckpt = Checkpoint.open(Path(hf_dir))
    return converter_for(ckpt).convert(ckpt)


def build_model(conversion: Conversion) -> Seq2SeqModel | DecoderOnlyModel:
    """A `Seq2SeqModel` (or, for a spec without an encoder, a `DecoderOnlyModel`) holding the
    converted weights; every parameter must come from the checkpoint (except sinusoidal tables and
    a zero logits bias, which heed computes the same way)."""
    model_class = DecoderOnlyModel if conversion.spec.decoder_only else Seq2SeqModel
    model = model_class(conversion.spec).eval()
    target = model.state_dict(keep_vars=True)
    given = conversion.state_dict
    # Tied parameters appear under several names; filling one fills all.
    names_of: dict[int, list[str]] = {}
    for name, tensor in target.items():
        names_of.setdefault(id(tensor), []).append(name)
    state = {}
    for names in names_of.values():
        source = next((n for n in names if n in given), None)
        if source is None:
            if all(_computed_by_heed(n, conversion) for n in names):
                continue
            raise ConversionError(f"converter produced no tensor for {names[0]}")
        tensor = given[source]
        expected = tuple(target[source].shape)
        if tuple(tensor.shape) != expected:
            raise ConversionError(
                f"tensor for {source} has shape {tuple(tensor.shape)}, but the config implies {expected}"
            )
        for n in names:
            state[n] = tensor.to(torch.float32)
    unknown = set(given) - set(target)
    if unknown:
        raise ConversionError(f"converter produced tensors heed's model does not have: {sorted(unknown)[:5]}")
    model.load_state_dict(state, strict=False)
    return model


def _computed_by_heed(name: str, conversion: Conversion) -> bool:
    spec = conversion.spec
    if name.endswith("positions.weight"):
        return spec.positions == "sinusoidal"
    return name == "final_logits_bias" and not spec.final_logits_bias


def export_checkpoint(
    hf_dir: Path,
    out_dir: Path,
    *,
    name: str,
    task: Task,
    quantize: str | None = None,
    summarize_prompt: str | None = None,
) -> Manifest:
    """Convert, export the fp32 graphs (checked against the PyTorch model, export/parity.py),
    then optionally quantize them in place. `summarize_prompt` (decoder-only checkpoints) is the
    manifest's prompt for /v1/summarize (service/prompts.py)."""
    conversion = convert(hf_dir)
    if conversion.spec.decoder_only and task != "generate":
        raise ConversionError(f"{hf_dir}: a decoder-only checkpoint continues prompts: export it with --task generate")
    if summarize_prompt is not None and not conversion.spec.decoder_only:
        raise ConversionError(
            f"{hf_dir}: a summarize prompt is for decoder-only checkpoints; an encoder-decoder summarizer reads "
            "the text itself (export it with --task summarize)"
        )
    model = build_model(conversion)
    # A summarizer does not choose a target language.
    languages = conversion.languages if task == "translate" else None
    manifest = write_model_dir(
        model,
        conversion.tokenizer,
        Path(out_dir),
        name=name,
        task=task,
        architecture=conversion.architecture,
        special_tokens=conversion.special_tokens,
        languages=languages,
        # a model that reads the source language's tag reads every language it can write
        source_languages=tuple(languages.tokens) if languages and languages.source_tag else (),
        generation=conversion.generation,
        chat=conversion.chat,
    )
    if summarize_prompt is not None:  # write_model_dir has no parameter for it: the manifest is rewritten
        manifest = Manifest.model_validate(manifest.model_dump() | {"summarize_prompt": summarize_prompt})
        manifest.write(Path(out_dir))
    if quantize == "int8":
        from export.quantize import quantize_model_dir

        manifest = quantize_model_dir(Path(out_dir))
    elif quantize is not None:
        raise ConversionError(f"quantization {quantize!r} is not supported (supported: int8)")
    return manifest
