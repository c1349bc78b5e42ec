"""The page at `/` ships in the distribution: a wheel built from the serving sources (no editable
install, no repository around it) holds every file `service/http/page.py` serves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from service.http.page import PAGE
from tests.http_server import ROOT


def test_wheel_contains_the_page(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT / "service", source / "service", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("heed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"service/static/{name}" for name, _ in PAGE.values()} <= names
    assert "service/http/page.py" in names
