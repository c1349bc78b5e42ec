"""The front door between the protocols and the models: every HTTP route submits through it.

It holds the served models (one `ModelWorker` each, discovered from the model repository), picks
the model of a request (by name, or the task's default), hands it the request to validate and
queue, and returns the `Job` to wait on or stream. It also owns the process's lifecycle flags
(ready, draining) and describes the models (`card`) for the protocols' model listings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from service.chat import render_chat
from service.errors import InvalidInput, ModelLoadError, Overloaded, UnknownModel, UnsupportedLanguage, WrongTask
from service.jobs import Job
from service.languages import Detection, Detector, match
from service.manifest import MANIFEST_FILE, Manifest, load_manifest
from service.metrics import Metrics
from service.prompts import summarize_prompts
from service.settings import Settings
from service.validation import ModelLimits, RawRequest, RequestCaps
from service.worker import ModelWorker


@dataclass(frozen=True)
class ModelCard:
    """What a protocol may show of a served model."""

    manifest: Manifest
    limits: ModelLimits
    caps: RequestCaps
    ready: bool
    created: int  # when the manifest was written, seconds since the epoch (OpenAI's `created`)


class FrontDoor:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        found = discover(settings.model_repo)
        self._created = {name: int((d / MANIFEST_FILE).stat().st_mtime) for name, (d, _) in found.items()}
        self._workers = {
            name: ModelWorker(directory, manifest, settings, metrics) for name, (directory, manifest) in found.items()
        }
        for worker in self._workers.values():
            metrics.add_model(worker.manifest, settings.kv_rows)
        configured = {
            "translate": settings.default_translate_model,
            "summarize": settings.default_summarize_model,
        }
        self.defaults = {task: self._default(task, name) for task, name in configured.items()}
        self.draining = False
        metrics.ready.set_function(lambda: float(self.ready))
        self._detector = Detector(self.language_pairs())  # its sources

    def _default(self, task: str, configured: str | None) -> str | None:
        if configured is not None:
            if configured not in self._workers or self._workers[configured].manifest.task != task:
                raise ModelLoadError(f"default {task} model {configured!r} is not a {task} model of the repository")
            return configured
        return next((name for name in sorted(self._workers) if self._workers[name].manifest.task == task), None)

    # -- requests ------------------------------------------------------------------------------

    def model_for(self, name: str | None, task: str | None) -> str:
        """The model a request goes to: `name`, or the task's default; raises for unknown models
        and models of another task."""
        if name is None:
            name = self.defaults.get(task)
            if name is None:
                raise UnknownModel(f'this server has no {task} model; name one with "model"')
        if name not in self._workers:
            raise UnknownModel(f"unknown model {name!r}; GET /v1/models lists the served models")
        manifest = self._workers[name].manifest
        summarizes = task == "summarize" and manifest.spec.decoder_only  # with a prompt (service/prompts.py)
        if task is not None and manifest.task != task and not summarizes:
            raise WrongTask(f"model {name!r} is a {manifest.task} model; use /v1/{manifest.task}")
        return name

    def submit(self, model: str, request: RawRequest, request_id: str) -> Job:
        """Validate and queue a request for a model of `model_for`; raises `RequestError`s."""
        worker = self._workers[model]
        if self.draining:
            raise Overloaded("the server is shutting down")
        if not worker.ready:
            raise Overloaded(f"model {model!r} is not ready: {worker.load_error or 'still loading'}")
        return worker.submit(request, request_id)

    def summary_prompts(self, model: str, texts: list[str]) -> tuple[list[str], bool]:
        """What `model` reads to summarize `texts` (service/prompts.py), and whether its tokenizer
        adds special tokens to it; the texts themselves for a seq2seq summarizer."""
        manifest = self.card(model).manifest
        return summarize_prompts(manifest, texts) if manifest.spec.decoder_only else (texts, True)

    def chat_prompt(self, model: str, messages: list[dict]) -> str:
        """The prompt of a conversation for `model`, rendered with its own chat template."""
        chat = self.card(model).manifest.chat
        if chat is None:
            raise InvalidInput(f"model {model!r} has no chat template; use /v1/completions")
        return render_chat(chat.template, messages, chat.tokens)

    # -- translation by language pair (protocols that name languages, not models) ---------------

    def _translators(self) -> list[Manifest]:
        """Translate models that name their target languages, the default first."""
        default = self.defaults.get("translate")
        names = sorted(self._workers, key=lambda name: (name != default, name))
        manifests = [self._workers[name].manifest for name in names]
        return [m for m in manifests if m.task == "translate" and m.languages is not None]

    def translation_model(self, source: str | None, target: str) -> tuple[str, str]:
        """The model that translates `source` (None: whatever it reads) into `target`, and its code
        for the target."""
        for manifest in self._translators():
            code = match(target, manifest.languages.tokens)
            reads = source is None or not manifest.source_languages or match(source, manifest.source_languages)
            if code is not None and reads:
                return manifest.name, code
        pairs = "; ".join(f"{s} -> {', '.join(t)}" for s, t in self.language_pairs().items()) or "none"
        raise UnsupportedLanguage(f"no model translates {source or 'any language'} into {target} (pairs: {pairs})")

    def language_pairs(self) -> dict[str, list[str]]:
        """Source language -> target languages, over the models that declare what they read."""
        pairs: dict[str, set[str]] = {}
        for manifest in self._translators():
            for source in manifest.source_languages:
                pairs.setdefault(source, set()).update(manifest.languages.tokens)
        return {source: sorted(targets) for source, targets in sorted(pairs.items())}

    def detect(self, text: str) -> list[Detection]:
        return self._detector.detect(text)

    # -- models --------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return sorted(self._workers)

    def card(self, name: str) -> ModelCard:
        if name not in self._workers:
            raise UnknownModel(f"unknown model {name!r}; GET /v1/models lists the served models")
        worker = self._workers[name]
        return ModelCard(worker.manifest, worker.limits, worker.caps, worker.ready, self._created[name])

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.draining and all(w.ready for w in self._workers.values())

    @property
    def idle(self) -> bool:
        return all(w.idle for w in self._workers.values())

    def start(self) -> None:
        for worker in self._workers.values():
            worker.start()

    def begin_drain(self) -> None:
        self.draining = True

    def stop(self, grace: float) -> None:
        """Stop every worker, sharing one grace period; the rest are answered 503 (blocking)."""
        end = time.monotonic() + grace
        for worker in self._workers.values():
            worker.stop(max(0.0, end - time.monotonic()))


def discover(repo: Path) -> dict[str, tuple[Path, Manifest]]:
    """Every model directory of the repository, by manifest name; refuses bad or duplicate ones."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ModelLoadError(f"model repository {repo} is not a directory")
    found: dict[str, tuple[Path, Manifest]] = {}
    for directory in sorted(p for p in repo.iterdir() if (p / MANIFEST_FILE).is_file()):
        manifest = load_manifest(directory, verify_hashes=False)  # hashes: on the model's worker thread
        if manifest.name in found:
            raise ModelLoadError(f"{directory}: model name {manifest.name!r} is also used by {found[manifest.name][0]}")
        found[manifest.name] = (directory, manifest)
    if not found:
        raise ModelLoadError(f"no model directories (with {MANIFEST_FILE}) in {repo}")
    return found
