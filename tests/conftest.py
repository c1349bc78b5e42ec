from __future__ import annotations

import pytest

from export.demo import build_model_dir


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A translation model directory (heed architecture, 2+2 layers) shared by a test session."""
    _, directory = build_model_dir(tmp_path_factory.mktemp("models"), "tiny")
    return directory


@pytest.fixture(scope="session")
def tiny_repo(tiny_dir):
    """A model repository holding the tiny model."""
    return tiny_dir.parent


@pytest.fixture(scope="session")
def http_repo(tmp_path_factory):
    """The HTTP tests' model repository (tests/http_server.py: build_repo)."""
    from tests.http_server import build_repo

    return build_repo(tmp_path_factory.mktemp("http-models"))


@pytest.fixture(scope="session")
def default_repo(tmp_path_factory):
    """heed's default models, exported from the committed weights."""
    from export.defaults import prepare

    repo = tmp_path_factory.mktemp("default-models")
    prepare(repo)
    return repo
