"""Write a complete model directory: graphs, tokenizer, manifest; then check it against PyTorch."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from export.compact import compact
from export.decoder_model import DecoderOnlyModel
from export.decoder_parity import compare_decoder_only
from export.model import Seq2SeqModel
from export.onnx_export import export_decoder_only, export_graphs
from export.parity import compare
from service.manifest import (
    ChatTemplate,
    GenerationDefaults,
    LanguageTags,
    Limits,
    Manifest,
    ModelFiles,
    SpecialTokens,
    Task,
    file_digest,
)


def write_model_dir(
    model: Seq2SeqModel | DecoderOnlyModel,
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
    chat: ChatTemplate | None = None,
    check: bool = True,
) -> Manifest:
    """Export `model` into `out_dir` and return its manifest. With `check`, the ONNX graphs are
    compared with the PyTorch model and a `ParityError` is raised where they differ by more than
    the tolerance, relative to the logits' magnitude (export/parity.py)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = model.spec
    if spec.decoder_only:
        export_decoder_only(model, out_dir)
        files, check_graphs = ModelFiles(encoder=None), compare_decoder_only
    else:
        export_graphs(model, out_dir)
        files, check_graphs = ModelFiles(), compare
    files = compact(out_dir, files, spec.vocab_size)
    tokenizer.save(str(out_dir / files.tokenizer))
    if limits is None:
        # a decoder-only model's max_positions is its context: prompt and output together
        bounded = spec.decoder_only or spec.positions in ("learned", "sinusoidal")
        bound = spec.max_positions if bounded else 1024
        prompt = bound - 1 if spec.decoder_only else bound  # a prompt leaves room for one token
        limits = Limits(max_input_tokens=prompt, max_output_tokens=bound - 1)
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
        sha256={f: file_digest(out_dir / f) for f in files.hashed},
        parameters=model.parameter_count(),
        chat=chat,
    )
    manifest.write(out_dir)
    if check:
        check_graphs(model, out_dir).require(str(out_dir))
    return manifest
