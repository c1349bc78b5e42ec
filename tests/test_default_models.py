"""The committed default models: they export through `write_model_dir`, load in heed's engine,
and translate and summarize held-out examples they never saw in training."""

from __future__ import annotations

import json
import re

import pytest

from export.checkpoint import WEIGHTS_DIR, metadata
from export.evaluate import evaluate, main
from export.recipes import NUMBERS, RECIPES, REPORTS
from service.manifest import load_manifest
from tests.http_server import ROOT, running


def test_committed_weights_are_compact():
    size = sum(
        (WEIGHTS_DIR / f"{name}{ext}").stat().st_size for name in RECIPES for ext in (".safetensors", ".tokenizer.json")
    )
    assert size <= 20 * 2**20


def test_prepared_manifests(default_repo):
    numbers = load_manifest(default_repo / NUMBERS.name)
    assert numbers.task == "translate" and numbers.architecture == "heed"
    assert numbers.languages.placement == "source_prefix" and set(numbers.languages.tokens) == {"de", "fr", "es"}
    reports = load_manifest(default_repo / REPORTS.name)
    assert reports.task == "summarize" and reports.languages is None
    assert reports.spec.encoder.attention.kind == "local_global"
    assert reports.spec == metadata(WEIGHTS_DIR, REPORTS.name)["spec"]


# Measured on 500 held-out examples (docs/default-models.md): 100% for both, in every language.
@pytest.mark.parametrize(("recipe", "least"), [(NUMBERS, 19), (REPORTS, 19)], ids=lambda r: getattr(r, "name", r))
def test_held_out_examples_come_out_right(default_repo, recipe, least):
    for score in evaluate(default_repo / recipe.name, recipe, count=20):
        assert score.correct >= least, score


def test_evaluate_command_reports_and_fails_below_the_bar(default_repo, tmp_path, capsys):
    args = [
        "--model-repo",
        str(default_repo),
        "--name",
        NUMBERS.name,
        "--count",
        "5",
        "--json",
        str(tmp_path / "s.json"),
    ]
    assert main([*args, "--min-accuracy", "0.0"]) == 0
    out = capsys.readouterr().out
    assert "heed-numbers   de  exact match" in out and "es  exact match" in out
    assert main([*args, "--min-accuracy", "1.01"]) == 1
    assert '"lang": "fr"' in (tmp_path / "s.json").read_text()


def readme_examples() -> list[tuple[str, dict, str, list[str]]]:
    """The README's curl examples: (route, request body, documented model, documented texts)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    examples = []
    for i, line in enumerate(lines):
        if not line.startswith("curl ") or "/v1/" not in line:
            continue
        command = line.rstrip("\\") + (lines[i + 1] if line.endswith("\\") else "")
        comment = next(c for c in lines[i + 1 : i + 4] if c.startswith("# "))
        route = re.search(r"/v1/\w+", command).group()
        inline = re.search(r"-d '(.+?)'", command)
        body = json.loads(inline.group(1) if inline else (ROOT / re.search(r"-d @(\S+)", command).group(1)).read_text())
        examples.append(
            (route, body, re.search(r'"model":"([^"]+)"', comment).group(1), re.findall(r'"text":"([^"]+)"', comment))
        )
    return examples


def test_readme_examples_return_the_documented_answers(default_repo, tmp_path):
    examples = readme_examples()
    assert {route for route, *_ in examples} == {"/v1/translate", "/v1/summarize"}
    with running(default_repo, tmp_path / "server.log") as server:
        for route, body, model, texts in examples:
            response = server.client.post(route, json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            outputs = answer["translations"] if route == "/v1/translate" else answer["summaries"]
            assert (answer["model"], [o["text"] for o in outputs]) == (model, texts)
