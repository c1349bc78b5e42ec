"""Write a complete model directory: graphs, tokenizer, manifest; then check it against PyTorch."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from export.model import Seq2SeqModel
from export.onnx_export import export_graphs
from export.parity import max_logit_difference
from service.manifest import (
    GenerationDefaults,
    LanguageTags,
    Limits,
    Manifest,
    ModelFiles,
    SpecialTokens,
    Task,
    file_digest,
)

PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    pass


def write_model_dir(
    model: Seq2SeqModel,
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    name: str,
    task: Task,
    architecture: str,
    special_tokens: SpecialTokens,
    languages: LanguageTags | None = None,
    source_languages: tuple[str, ...] = (),
    generation: GenerationDefaults | None = None,
    limits: Limits | None = None,
    check: bool = True,
) -> Manifest:
    """Export `model` into `out_dir` and return its manifest. With `check`, the ONNX graphs are
    compared with the PyTorch model and a `ParityError` is raised above `PARITY_TOLERANCE`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_graphs(model, out_dir)
    files = ModelFiles()
    tokenizer.save(str(out_dir / files.tokenizer))
    spec = model.spec
    if limits is None:
        bound = spec.max_positions if spec.positions in ("learned", "sinusoidal") else 1024
        limits = Limits(max_input_tokens=bound, max_output_tokens=bound - 1)
    manifest = Manifest(
        name=name,
        task=task,
        architecture=architecture,
        spec=spec,
        special_tokens=special_tokens,
        languages=languages,
        source_languages=list(source_languages),
        generation=generation or GenerationDefaults(),
        limits=limits,
        files=files,
        sha256={f: file_digest(out_dir / f) for f in (files.encoder, files.decoder, files.tokenizer)},
        parameters=model.parameter_count(),
    )
    manifest.write(out_dir)
    if check:
        diff = max_logit_difference(model, out_dir)
        if diff > PARITY_TOLERANCE:
            raise ParityError(f"{out_dir}: ONNX logits differ from PyTorch by {diff:.2e} (> {PARITY_TOLERANCE})")
    return manifest
