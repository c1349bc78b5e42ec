"""heed's default models as committed: fp16 safetensors weights with the `ModelSpec` in their
metadata, and the tokenizer beside them (`<name>.safetensors`, `<name>.tokenizer.json`).

fp16 halves the size of what the repository carries; the model is trained and exported in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from export.model import Seq2SeqModel
from service.manifest import ModelSpec

WEIGHTS_DIR = Path(__file__).parent / "weights"


def save(model: Seq2SeqModel, tokenizer: Tokenizer, out: Path, name: str, metadata: dict) -> Path:
    """Write fp16 weights (a tied tensor stored once, as `save_model` does) and the tokenizer;
    `metadata` is stored as JSON under the key "heed" (safetensors adds keys of its own)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    half = Seq2SeqModel(model.spec)
    half.load_state_dict(model.state_dict())
    half.half()
    path = out / f"{name}.safetensors"
    meta = {"spec": model.spec.model_dump_json(), "heed": json.dumps(metadata)}
    save_model(half, str(path), metadata=meta)
    tokenizer.save(str(out / f"{name}.tokenizer.json"))
    return path


def metadata(directory: Path, name: str) -> dict:
    with safe_open(str(Path(directory) / f"{name}.safetensors"), "pt") as f:
        meta = f.metadata()
    return {"spec": ModelSpec.model_validate_json(meta["spec"]), **json.loads(meta.get("heed", "{}"))}


def load(directory: Path, name: str) -> tuple[Seq2SeqModel, Tokenizer]:
    """The model (fp32, eval mode) and tokenizer that `save` wrote."""
    directory = Path(directory)
    model = Seq2SeqModel(metadata(directory, name)["spec"]).half()
    load_model(model, str(directory / f"{name}.safetensors"))
    return model.float().eval(), Tokenizer.from_file(str(directory / f"{name}.tokenizer.json"))
