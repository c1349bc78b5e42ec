"""The shape of the code that the service redesign promised (docs/architecture.md): small
modules, an HTTP layer that talks only to the front door, a runtime without dynamic imports or
imports of the export side, and extra commands declared as entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from loadtests.server import ROOT

SERVICE = ROOT / "service"
MODULES = sorted(SERVICE.rglob("*.py"))
REACHING = ("scheduler.engine", ".engine.codec", ".engine.cache", ".engine.runner", ".engine.prepare", ".outbox")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_no_service_module_is_over_350_lines():
    assert len(MODULES) > 20
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 350}
    assert long == {}
    assert not (SERVICE / "app.py").exists()


def test_http_modules_reach_no_engine():
    http = [p for p in MODULES if any(m.split(".")[0] in ("fastapi", "starlette") for m in imports(p))]
    assert len(http) >= 8
    found = {str(p.relative_to(ROOT)): [r for r in REACHING if r in p.read_text()] for p in http}
    assert {path: hits for path, hits in found.items() if hits} == {}
    importers_of_the_engine_side = [p for p in http if imports(p) & {"service.worker", "service.scheduler"}]
    assert importers_of_the_engine_side == []


def test_the_runtime_has_no_dynamic_imports_and_imports_nothing_of_export():
    for path in MODULES:
        source = path.read_text()
        for call in ("import_module", "__import__", "exec(", "eval("):
            assert call not in source, f"{path.relative_to(ROOT)} uses {call}"
        roots = {name.split(".")[0] for name in imports(path)}
        assert not roots & {"export", "loadtests", "tests", "torch", "transformers"}, path


def test_extra_commands_are_entry_points_with_a_clear_error_without_their_extra():
    listed = subprocess.run([sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert listed.returncode == 0 and "export" in listed.stdout and "bench" in listed.stdout
    block_torch = "import sys; sys.modules['torch'] = None; from service.cli import main; sys.exit(main(['export']))"
    out = subprocess.run([sys.executable, "-c", block_torch], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "pip install 'heed[export]'" in out.stderr and "Traceback" not in out.stderr
