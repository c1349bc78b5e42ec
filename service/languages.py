"""Language codes and language detection, for the protocols that name languages (LibreTranslate).

Codes are compared case-insensitively and a regional variant falls back to its language
(`pt-BR` -> `pt`, `EN_us` -> `en`) when the model has no code for the variant itself. Failing
both, a code names the model's only code of the same language, compared as ISO 639-1 where ISO 639
gives the language one: `de`, `DE`, `deu` and `de-AT` name NLLB's `deu_Latn`, and `deu_Latn` names
M2M100's `de`. Where the model has the language in several scripts, the script named picks one:
`zh` names neither of NLLB's `zho_Hans` and `zho_Hant` (ambiguous), `zh-Hans` (DeepL's `ZH-HANS`)
names the first, and a Chinese region names its script as CLDR's likely subtags give it (`zh-TW`,
`zh-HK`, `zh-MO`: Traditional; `zh-CN`, `zh-SG`, `zh-MY`: Simplified).

A macrolanguage's code (`ar`, `ms`, `sw`, also as `ara`) names the model's code of a member
language, where the model has no code of the macrolanguage itself: its only member, or, with
several, the one that CLDR writes as the macrolanguage (`arb` is `ar`, `pes` is `fa`, `zsm` is
`ms`); NLLB's codes are mostly individual languages (`arb_Arab`, `zsm_Latn`, `swh_Latn`).
Detection uses py3langid, whose model ships inside the package (nothing is downloaded), restricted
to the languages the served models read when they declare them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import pycountry
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from service.characters import check_text


def normalize(code: str) -> str:
    return code.strip().lower().replace("_", "-")


# ISO 639-3 macrolanguage mappings (SIL, iso-639-3-macrolanguages.tab) for the macrolanguages whose
# members NLLB-200 has codes for, keyed as `language` writes the macrolanguage. The first member
# is the one CLDR's language aliases write as the macrolanguage (supplementalMetadata.xml,
# reason "macrolanguage": `arb` -> `ar`), whether or not NLLB has it; the others are NLLB's.
MACROLANGUAGES: dict[str, tuple[str, ...]] = {
    "ar": ("arb", "acm", "acq", "aeb", "ajp", "apc", "ars", "ary", "arz"),  # Arabic
    "ay": ("ayr",),  # Aymara
    "az": ("azj", "azb"),  # Azerbaijani
    "din": ("dik",),  # Dinka
    "fa": ("pes", "prs"),  # Persian (CLDR: Dari is fa-AF)
    "ff": ("fuc", "fuv"),  # Fulah
    "kr": ("knc",),  # Kanuri
    "ku": ("kmr", "ckb"),  # Kurdish
    "lv": ("lvs", "ltg"),  # Latvian
    "mg": ("plt",),  # Malagasy
    "mn": ("khk",),  # Mongolian
    "ms": ("zsm", "bjn", "ind", "min"),  # Malay
    "ne": ("npi",),  # Nepali
    "no": ("nob", "nno"),  # Norwegian
    "om": ("gaz",),  # Oromo
    "or": ("ory",),  # Oriya
    "ps": ("pbu", "pbt"),  # Pashto
    "qu": ("quz", "quy"),  # Quechua
    "sq": ("als",),  # Albanian
    "sw": ("swh",),  # Swahili
    "tmh": ("ttq", "taq"),  # Tamashek
    "uz": ("uzn",),  # Uzbek
    "yi": ("ydd",),  # Yiddish
    "zh": ("cmn", "yue"),  # Chinese
}
# CLDR likely subtags: the script of Chinese written in a region that names none (`zh-TW` -> Hant)
REGION_SCRIPTS = {("zh", r): "hant" for r in ("tw", "hk", "mo")} | {("zh", r): "hans" for r in ("cn", "sg", "my")}


def match(code: str, available: Iterable[str]) -> str | None:
    """The code of `available` that `code` names: the same code, its language without region, the
    code of `available` of the same language, or of the macrolanguage's member (module docstring)."""
    available = list(available)
    by_normal = {normalize(a): a for a in available}
    wanted = normalize(code)
    found = by_normal.get(wanted) or by_normal.get(wanted.split("-")[0])
    if found is not None:
        return found
    same = [a for a in available if language(a) == language(code)] or _member(language(code), available)
    if len(same) > 1:  # the same language in several scripts: the one whose script is named (`zh-Hans`)
        named = [a for a in same if normalize(a).split("-")[1:] == wanted.split("-")[1:]]
        same = named or [a for a in same if _script(wanted) in normalize(a).split("-")[1:]]
    return same[0] if len(same) == 1 else None


def _member(macrolanguage: str, available: list[str]) -> list[str]:
    """The codes of `available` of the macrolanguage's one member that they have, or of its
    CLDR member where they have several; none where that is ambiguous."""
    members = MACROLANGUAGES.get(macrolanguage, ())
    present = {normalize(a).split("-")[0] for a in available} & set(members)
    chosen = present.pop() if len(present) == 1 else members[0] if members and members[0] in present else None
    return [a for a in available if normalize(a).split("-")[0] == chosen]


def _script(wanted: str) -> str | None:
    """The script a normalized code names: its own script subtag, else its region's likely one."""
    base, *rest = wanted.split("-")
    scripts = [part for part in rest if len(part) == 4 and part.isalpha()]
    if scripts:
        return scripts[0]
    regions = (REGION_SCRIPTS.get((language(base), part)) for part in rest)
    return next((script for script in regions if script is not None), None)


@cache
def language(code: str) -> str:
    """A code's language, as ISO 639-1 where ISO 639 gives it one (`deu_Latn` -> `de`), else as
    its first subtag (`arb_Arab` -> `arb`: Standard Arabic has no two-letter code)."""
    base = normalize(code).split("-")[0]
    found = pycountry.languages.get(alpha_3=base) if len(base) == 3 else None
    return getattr(found, "alpha_2", base)


def name(code: str) -> str:
    """The English name of a language code, with its script when the code names one (NLLB's
    `zho_Hans`, `zho_Hant`); the code itself when ISO 639 does not list it."""
    base, *rest = normalize(code).split("-")
    found = pycountry.languages.get(alpha_2=base) if len(base) == 2 else pycountry.languages.get(alpha_3=base)
    if found is None:
        return code
    script = next((pycountry.scripts.get(alpha_4=part.title()) for part in rest if len(part) == 4), None)
    return f"{found.name} ({script.name})" if script is not None else found.name


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # 0 to 1


class Detector:
    """Detects among `languages` (codes as the models spell them), or among every language
    py3langid knows when `languages` is empty.

    py3langid's model takes about 75 MiB once loaded, as much as an int8 Marian-base model's
    weights: it is loaded by the first detection, so that a server whose clients always name the
    source language never holds it (that first request waits about half a second longer).
    """

    def __init__(self, languages: Iterable[str] = ()):
        self._languages = sorted(languages)
        self._identifier: LanguageIdentifier | None = None
        self._codes: dict[str, str] = {}
        self._loading = threading.Lock()

    def _loaded(self) -> LanguageIdentifier:
        with self._loading:
            if self._identifier is None:
                identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
                known = set(identifier.nb_classes)
                for code in self._languages:  # the first code of a language answers for it (`de` before `deu_Latn`)
                    if language(code) in known:
                        self._codes.setdefault(language(code), code)
                if self._codes:
                    identifier.set_languages(sorted(self._codes))
                self._identifier = identifier
        return self._identifier

    def detect(self, text: str) -> list[Detection]:
        """Candidates, most likely first; text that heed refuses to translate (service/characters.py)
        is refused here too (`InvalidInput`), as detection comes before validation."""
        check_text(text, "the text to detect the language of")
        ranked = self._loaded().rank(text)[:3]
        return [Detection(self._codes.get(code, code), float(p)) for code, p in ranked]
