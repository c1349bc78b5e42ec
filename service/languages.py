"""Language codes and language detection, for the protocols that name languages (LibreTranslate).

Codes are compared case-insensitively and a regional variant falls back to its language
(`pt-BR` -> `pt`, `EN_us` -> `en`) when the model has no code for the variant itself. Detection
uses py3langid, whose model ships inside the package (nothing is downloaded), restricted to the
languages the served models read when they declare them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pycountry
from py3langid.langid import MODEL_FILE, LanguageIdentifier


def normalize(code: str) -> str:
    return code.strip().lower().replace("_", "-")


def match(code: str, available: Iterable[str]) -> str | None:
    """The code of `available` that `code` names: the same code, or its language without region."""
    by_normal = {normalize(a): a for a in available}
    wanted = normalize(code)
    return by_normal.get(wanted) or by_normal.get(wanted.split("-")[0])


def name(code: str) -> str:
    """The English name of a language code (the code itself when ISO 639 does not list it)."""
    base = normalize(code).split("-")[0]
    found = pycountry.languages.get(alpha_2=base) if len(base) == 2 else pycountry.languages.get(alpha_3=base)
    return found.name if found is not None else code


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # 0 to 1


class Detector:
    """Detects among `languages` (codes as the models spell them), or among every language
    py3langid knows when `languages` is empty."""

    def __init__(self, languages: Iterable[str] = ()):
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        known = set(self._identifier.nb_classes)
        self._codes = {normalize(c).split("-")[0]: c for c in languages if normalize(c).split("-")[0] in known}
        if self._codes:
            self._identifier.set_languages(sorted(self._codes))

    def detect(self, text: str) -> list[Detection]:
        """Candidates, most likely first."""
        return [Detection(self._codes.get(code, code), float(p)) for code, p in self._identifier.rank(text)[:3]]
