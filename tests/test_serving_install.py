"""`service` runs without torch (the serving install has none), and the CLI uses the same engine."""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import subprocess
import sys

import uvicorn

import service
from service.engine import Engine

BLOCK_TORCH = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'export', 'onnxscript', 'sentencepiece'):\n"
    "    sys.modules[name] = None  # any import of these now raises ImportError\n"
)


def test_every_service_module_imports_and_runs_without_torch(tiny_dir):
    modules = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    assert {"service.engine", "service.http.app"} <= set(modules)
    code = BLOCK_TORCH + (
        "import importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "from service.engine import Engine\n"
        f"print(Engine({str(tiny_dir)!r}).generate(['hello world'], {{'max_new_tokens': 4}})[0].output_tokens)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0 < int(out.stdout) <= 4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_generate_json_matches_engine(tiny_dir):
    texts = ["hello world", "the quick brown fox"]
    out = run_cli(
        "generate",
        "--model",
        str(tiny_dir),
        "--text",
        texts[0],
        "--text",
        texts[1],
        "--json",
        "--max-new-tokens",
        "8",
        "--beam-size",
        "2",
        "--target-lang",
        "fr",
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    want = Engine(tiny_dir).generate(texts, {"max_new_tokens": 8, "beam_size": 2}, target_lang="fr")
    assert [line["token_ids"] for line in lines] == [w.token_ids for w in want]
    assert [line["text"] for line in lines] == [w.text for w in want]


def test_cli_generate_takes_no_server_settings_from_the_environment(tiny_dir):
    """`heed generate` is configured by its flags; a server's HEED_* variables do not leak in."""
    env = os.environ | {"HEED_MAX_NEW_TOKENS": "1", "HEED_KV_ROWS": "1"}
    args = ["generate", "--model", str(tiny_dir), "--text", "hello", "--json", "--max-new-tokens", "6"]
    args += ["--min-new-tokens", "6", "--beam-size", "2"]
    out = subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output_tokens"] == 6


def test_cli_reports_bad_options_clearly(tiny_dir):
    out = run_cli("generate", "--model", str(tiny_dir), "--text", "hi", "--top-p", "3")
    assert out.returncode == 2
    assert "option 'top_p'" in out.stderr and "Traceback" not in out.stderr


def test_the_server_runs_on_httptools_and_uvloop():
    """uvicorn takes them when installed (they are serving dependencies): C HTTP parsing and event
    loop, about 30% less event-loop CPU per request than h11 on asyncio's loop."""

    async def app(scope, receive, send):
        pass

    config = uvicorn.Config(app, log_level="error")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert importlib.util.find_spec("uvloop") is not None
