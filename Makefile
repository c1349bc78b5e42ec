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

.PHONY: serve test lint models evaluate clean system-deps loadtest reliability nginx image image-prometheus docker-compose

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

# heed's own default models, exported from the committed weights (docs/default-models.md).
$(MODEL_REPO)/.ready: $(wildcard export/weights/*) export/onnx_export.py export/attention.py export/model.py \
		export/recipes.py export/package.py export/defaults.py service/manifest.py | $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m export.defaults --out-repo $(MODEL_REPO)
	touch $@

models: $(MODEL_REPO)/.ready

# Held-out exact match of the default models through the exported ONNX graphs (the acceptance bar).
evaluate: $(MODEL_REPO)/.ready
	$(DEV_VENV)/bin/python -m export.evaluate --model-repo $(MODEL_REPO) --count 500 --min-accuracy 0.95

serve: $(SERVE_VENV)/.installed $(MODEL_REPO)/.ready
	HEED_PORT=$(HEED_PORT) $(SERVE_VENV)/bin/heed serve --model-repo $(MODEL_REPO)

test: system-deps nginx $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/python -m pytest -q

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check . && $(DEV_VENV)/bin/ruff format --check .

clean:
	rm -rf $(SERVE_VENV) $(DEV_VENV) $(MODEL_REPO)

# Debian packages the tests need: prometheus (server and promtool) for the alert-rule tests and
# the scrape integration test; chromium and chromium-driver for the browser test of the page at /.
# apt-get runs only when a binary is missing.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# A bounded headless locust run (loadtests/locustfile.py, its ramp shape) against a local heed
# serving $(MODEL_REPO); CSV stats go to $(LOADTEST_OUT)_*.csv. Fails on any request failure.
LOADTEST_PORT ?= 8089
LOADTEST_USERS ?= 8
LOADTEST_RAMP ?= 20
LOADTEST_DURATION ?= 60
LOADTEST_OUT ?= artifacts/loadtest/heed
loadtest: $(DEV_VENV)/.installed $(MODEL_REPO)/.ready
	@mkdir -p $(dir $(LOADTEST_OUT))
	@HEED_PORT=$(LOADTEST_PORT) $(DEV_VENV)/bin/heed serve --host 127.0.0.1 --model-repo $(MODEL_REPO) & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT; \
	$(DEV_VENV)/bin/python -m loadtests.wait_ready http://127.0.0.1:$(LOADTEST_PORT) --timeout 120 && \
	LOADTEST_USERS=$(LOADTEST_USERS) LOADTEST_RAMP=$(LOADTEST_RAMP) LOADTEST_DURATION=$(LOADTEST_DURATION) \
	$(DEV_VENV)/bin/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:$(LOADTEST_PORT) \
	  --csv $(LOADTEST_OUT) --only-summary --stop-timeout 30

# Reliability scenarios (loadtests/reliability.py), loopback only and bounded: overload at 3x the
# measured capacity, an injected ONNX Runtime fault, SIGTERM under load; RELIABILITY_SECONDS of
# load each. Prints the table; fails on a lost admitted request or an unexpected 5xx. Then two
# replicas behind Debian's nginx restarted one at a time under locust (loadtests/rolling.py).
RELIABILITY_SECONDS ?= 60
reliability: $(DEV_VENV)/.installed nginx
	$(DEV_VENV)/bin/python -m loadtests.reliability --duration $(RELIABILITY_SECONDS)
	$(DEV_VENV)/bin/python -m loadtests.rolling --duration $(RELIABILITY_SECONDS)

# Debian's nginx for the rolling-restart scenario (installed only when missing; never started as a service).
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }

# Container images (deploy/docker/images.sh): starts Docker's daemon when none runs (installing
# Debian's docker.io when there is none), takes PYTHON_IMAGE as the base when it can be pulled and
# otherwise builds one from Debian's packages (deploy/docker/debian-base.sh, once), then builds
# heed's CPU image (HEED_IMAGE) serving the prepared default models, or Prometheus from Debian's
# package on the same base (PROMETHEUS_IMAGE) for the compose stack's test profile.
HEED_IMAGE ?= heed:cpu
PROMETHEUS_IMAGE ?= heed-prometheus:debian
PYTHON_IMAGE ?= python:3.11-slim-bookworm
IMAGE_ENV = HEED_IMAGE=$(HEED_IMAGE) PROMETHEUS_IMAGE=$(PROMETHEUS_IMAGE) PYTHON_IMAGE=$(PYTHON_IMAGE)
image: $(MODEL_REPO)/.ready
	$(IMAGE_ENV) deploy/docker/images.sh heed

image-prometheus:
	$(IMAGE_ENV) deploy/docker/images.sh prometheus

# Debian's docker-compose (1.29) for the compose stack (installed only when missing).
docker-compose:
	@command -v docker-compose >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; }
