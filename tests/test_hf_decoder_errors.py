"""Decoder-only checkpoints heed cannot express exactly are refused with a message that says what,
before anything is written; so is exporting one for a task it cannot do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.cli import main as export_main
from tests import hf_builders

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny checkpoints (their configs are what these tests change)."""
    root = tmp_path_factory.mktemp("hf-decoder-errors")
    return {name: getattr(hf_builders, name)(root / name, steps=0) for name in ("gpt2", "llama", "qwen2")}


def edited(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(config | changes))
    return target


CASES = {
    "yarn": ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "'yarn' is not"),
    "dynamic": ("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "'dynamic' is not"),
    "partial-rotary": ("llama", {"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
    "old-style-rope-scaling": (
        "llama",
        {"rope_parameters": None, "rope_scaling": {"type": "yarn", "factor": 2.0}},
        "'yarn' is not",
    ),
    "mixed-layers": ("qwen2", {"layer_types": ["full_attention", "sliding_attention"]}, "mix attention types"),
    "inverse-layer-scaling": ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    "no-eos": ("gpt2", {"eos_token_id": None}, "no eos_token_id"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_inexpressible_checkpoints_are_refused(checkpoints, tmp_path, capsys, case):
    arch, changes, message = CASES[case]
    hf_dir = edited(checkpoints[arch], tmp_path / "hf", **changes)
    if case == "no-eos":
        (hf_dir / "generation_config.json").unlink()
    args = ["--from-hf", str(hf_dir), "--name", "m", "--task", "generate", "--out-repo", str(tmp_path / "out")]
    assert export_main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "m").exists()


def test_a_decoder_only_checkpoint_exports_for_generation_only(checkpoints, tmp_path, capsys):
    args = ["--from-hf", str(checkpoints["gpt2"]), "--name", "m", "--task", "summarize", "--out-repo", str(tmp_path)]
    assert export_main(args) == 2
    assert "--task generate" in capsys.readouterr().err


def test_a_sliding_window_on_every_layer_is_a_local_window(checkpoints, tmp_path):
    """Qwen2 with every layer sliding over 6 keys: a causal window of radius 5 (the token itself
    and the 5 before it), as transformers' mask `kv > q - 6`."""
    hf_dir = edited(
        checkpoints["qwen2"], tmp_path / "hf", use_sliding_window=True, sliding_window=6, max_window_layers=0
    )
    config = json.loads((hf_dir / "config.json").read_text())
    del config["layer_types"]  # derived from use_sliding_window and max_window_layers, as Qwen2Config does
    (hf_dir / "config.json").write_text(json.dumps(config))
    args = ["--from-hf", str(hf_dir), "--name", "m", "--task", "generate", "--out-repo", str(tmp_path)]
    assert export_main(args) == 0
    attention = json.loads((tmp_path / "m" / "manifest.json").read_text())["spec"]["decoder"]["attention"]
    assert attention == {"kind": "local", "window": 5, "global_tokens": 0, "relative_bias": None}
