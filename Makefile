# heed: two commands on a fresh machine.
#   make serve   serve the default models (prepares them on first run)
#   make test    run the whole test suite
# Each creates its own virtual environment. The serving one has no torch; the dev one
# (tests, export) has torch, pinned to the CPU wheel this machine holds (TORCH=... to change).

PYTHON ?= python3
TORCH ?= torch==2.13.0
SERVE_VENV := .venv
DEV_VENV := .venv-dev
MODEL_REPO ?= models
HEED_PORT ?= 8000

.PHONY: serve test lint models clean

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e .
	touch $@

$(DEV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q --upgrade pip
	$(DEV_VENV)/bin/pip install -q "$(TORCH)"
	$(DEV_VENV)/bin/pip install -q -e ".[export,dev]"
	touch $@

$(MODEL_REPO)/.ready: | $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m export.demo --out-repo $(MODEL_REPO)
	touch $@

models: $(MODEL_REPO)/.ready

serve: $(SERVE_VENV)/.installed $(MODEL_REPO)/.ready
	HEED_PORT=$(HEED_PORT) $(SERVE_VENV)/bin/heed serve --model-repo $(MODEL_REPO)

test: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/python -m pytest -q

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check . && $(DEV_VENV)/bin/ruff format --check .

clean:
	rm -rf $(SERVE_VENV) $(DEV_VENV) $(MODEL_REPO)
