"""DeepL's API v2 (`/v2/translate`, `/v2/languages`, `/v2/usage`), so that DeepL's clients (the
official `deepl` libraries, given heed's base URL as `server_url`) work unchanged.

Parameters come as DeepL's clients send them: a JSON body, or a form-encoded body where `text`
repeats (`text=a&text=b`); the query string counts too (GET `/v2/languages?type=target`), the
body over it. The key is the header `Authorization: DeepL-Auth-Key <key>` (the guard takes it like
`Bearer`); the `auth_key` field is not read, as DeepL itself no longer reads it (January 2026:
keys in query strings and bodies end up in logs). Errors are DeepL's `{"message": ...}` with its
statuses: 403 for a missing or wrong key, 400 for a bad request, 413 for too much text, 429 when
overloaded or shutting down, or when the key is over its requests per minute (DeepL's clients
retry it with backoff), 456 when the key's character quota is spent (service/http/quotas.py).
The model is the translate model whose languages cover the pair (`FrontDoor.translation_model`);
DeepL's codes (`DE`, `EN-US`, `PT-BR`) are matched case-insensitively, a regional variant falling
back to its language.

Where heed cannot do what DeepL does, it does what DeepL does for a language without the feature,
and refuses what it could only ignore by changing what the answer means:
- accepted and ignored: `formality` `default`, `prefer_more`, `prefer_less` (DeepL falls back to
  the default where a language has no formality, and no language heed serves has one:
  `/v2/languages` says `"supports_formality": false`); `preserve_formatting` (heed corrects no
  formatting anyway); `context` and `model_type` (hints; the translation stays a translation);
  `splitting_tags`, `non_splitting_tags` and `outline_detection` (heed decides itself which tags
  join a sentence: inline elements do, any other element ends one, service/inline_markup.py);
  every parameter DeepL does not know.
- refused with 400: `formality` `more` and `less` (DeepL refuses them on such languages); the
  parameters that name what heed does not keep, `glossary_id`, `glossary_ids`, `style_id`,
  `translation_memory_id` (DeepL refuses an unknown one; ignoring it would silently drop the
  caller's terminology), and `custom_instructions` (a model that cannot follow instructions
  would silently not follow them).
- `tag_handling` `html` or `xml`: the text between the tags is translated and the markup kept
  (service/markup.py), elements in `ignore_tags` left as written, as are `translate="no"`, code
  and scripts.
- `split_sentences` `0` translates each text whole; `1` (DeepL's default) translates it sentence
  by sentence, a line break ending a sentence; `nonewlines` too, but a line break within a
  sentence does not end it (`RawRequest.split_sentences`, `line_breaks`). With `tag_handling`, a
  line break is the document's layout, never a sentence's end.
- `billed_characters` is answered when `show_billed_characters` is set (DeepL's clients set it),
  and is the text's length; `/v2/usage` reports the key's account (`usage_counts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.characters import check_text
from service.errors import InvalidInput
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.http.errors import ErrorStyle
from service.http.field_schemas import DEEPL_TRANSLATE
from service.http.fields import read_fields
from service.http.markup_jobs import prose, translate_markup
from service.http.quotas import Account
from service.languages import language, match, name, normalize
from service.markup import Kind, parse
from service.validation import RawRequest

PATHS = frozenset({"/v2/translate", "/v2/languages", "/v2/usage"})


# a key without a character quota: the largest count a JSON number holds exactly everywhere (JavaScript's
# too), so that no client ever sees the limit reached (9e15 characters: centuries at a million a second)
CHARACTER_LIMIT = 2**53 - 1

FORMALITIES = frozenset({"default", "prefer_more", "prefer_less"})  # what DeepL takes without formality support
UNHELD = ("glossary_id", "glossary_ids", "style_id", "translation_memory_id")  # resources heed does not keep


def _status(status: int) -> int:
    """heed's status as DeepL's: its clients tell a bad key (403) from a bad request (400) by
    status, and back off and retry on 429, DeepL's "too many requests" (heed's 503, Retry-After kept)."""
    return {401: 403, 404: 400, 422: 400, 503: 429}.get(status, status)


ERROR_STYLE = ErrorStyle(
    PATHS, _status, lambda type_, message, request_id: {"message": message}, by_type={"quota_exceeded": 456}
)


def deepl_code(code: str, codes: Iterable[str] = ()) -> str:
    """A model's language code as DeepL writes it: `en` -> `EN`, `pt_br` -> `PT-BR`, NLLB's
    `deu_Latn` -> `DE`; a script stays only where `codes` (the list it is shown in) has the
    language in another script too (`zho_Hans` -> `ZH-HANS`, as DeepL writes Chinese)."""
    _, *rest = normalize(code).split("-")
    script = len(rest) == 1 and len(rest[0]) == 4
    alone = sum(language(other) == language(code) for other in codes) <= 1
    return "-".join([language(code), *([] if script and alone else rest)]).upper()


def flag(value: Any) -> bool:
    """A boolean parameter, as JSON (`true`) or a form (`1`, `true`) sends it."""
    return str(value).strip().lower() in ("1", "true")


def texts_of(fields: dict[str, Any]) -> list[str]:
    value = fields.get("text")
    texts = value if isinstance(value, list) else [] if value is None else [value]
    if not texts:
        raise InvalidInput("Parameter 'text' not specified.")
    if not all(isinstance(text, str) for text in texts):
        raise InvalidInput("Parameter 'text' must be a list of strings.")
    for i, text in enumerate(texts):  # blank texts are answered unvalidated: the rule applies to them here
        check_text(text, f"text {i}")
    return texts


def markup(fields: dict[str, Any]) -> tuple[Kind | None, frozenset[str]]:
    """`tag_handling` (None: plain text) and `ignore_tags`, the elements left untranslated (a list,
    or names joined by commas as DeepL's clients send them)."""
    kind = fields.get("tag_handling") or None
    if kind not in (None, "html", "xml"):
        raise InvalidInput(f"Value for 'tag_handling' not supported: {kind!r} (html or xml).")
    ignore = fields.get("ignore_tags") or []
    names = ignore.split(",") if isinstance(ignore, str) else ignore
    if not all(isinstance(name, str) for name in names):
        raise InvalidInput("Parameter 'ignore_tags' must be a list of tag names.")
    return kind, frozenset(name.strip() for name in names if name.strip())


def split_sentences(fields: dict[str, Any]) -> tuple[bool, bool]:
    """DeepL's `split_sentences` (`0`, `1` the default, `nonewlines`) as heed's switches: whether
    to split, and whether a line break ends a sentence."""
    value = str(fields.get("split_sentences", "1")).strip().lower()
    if value not in ("0", "1", "nonewlines"):
        raise InvalidInput(f"Value for 'split_sentences' not supported: {value!r} (0, 1 or nonewlines).")
    return value != "0", value == "1"


def check_options(fields: dict[str, Any]) -> None:
    """Refuse what DeepL would refuse on heed's languages, and what heed cannot honour without
    changing the answer's meaning (module docstring); everything else is ignored."""
    formality = fields.get("formality")
    if formality is not None and str(formality).lower() not in FORMALITIES:
        if str(formality).lower() in ("more", "less"):
            raise InvalidInput(
                "'formality' is not supported for given 'target_lang' (no language of this server has "
                "formality; prefer_more and prefer_less are accepted)."
            )
        raise InvalidInput(f"Value for 'formality' not supported: {formality!r}.")
    unheld = next((field for field in UNHELD if fields.get(field)), None)
    if unheld is not None:
        raise InvalidInput(f"Parameter '{unheld}' is not supported: this server keeps no glossaries or memories.")
    if fields.get("custom_instructions"):
        raise InvalidInput("Parameter 'custom_instructions' is not supported: this server's models follow none.")


def deepl_routes(front: FrontDoor) -> APIRouter:
    router = APIRouter(tags=["DeepL"])

    def pairs() -> tuple[list[str], list[str]]:
        """The source and the target languages of the served models, in the models' codes."""
        by_source = front.language_pairs()
        return list(by_source), sorted({target for targets in by_source.values() for target in targets})

    def languages_of(wanted: Any, codes: list[str], field: str) -> str:
        """The model's code of a DeepL language parameter, or a 400 that names the supported ones."""
        code = match(wanted, codes) if isinstance(wanted, str) else None
        if code is None:
            supported = ", ".join(deepl_code(c, codes) for c in codes) or "none"
            raise InvalidInput(f"Value for '{field}' not supported: {wanted!r}; this server's are {supported}.")
        return code

    @router.post("/v2/translate", summary="DeepL: translate text into target_lang", openapi_extra=DEEPL_TRANSLATE)
    async def translate(request: Request) -> JSONResponse:
        fields = await read_fields(request)
        texts = texts_of(fields)
        if not fields.get("target_lang"):
            raise InvalidInput("Parameter 'target_lang' not specified.")
        check_options(fields)
        kind, ignore = markup(fields)
        documents = [parse(text, kind, ignore) for text in texts] if kind else None
        split, line_breaks = split_sentences(fields)
        sources, targets = pairs()
        languages_of(fields["target_lang"], targets, "target_lang")
        if fields.get("source_lang"):
            source = languages_of(fields["source_lang"], sources, "source_lang")
        else:  # one language for the request, as one RawRequest has one; markup is not language
            source = front.detect("\n".join(prose(documents) if documents else texts))[0].language
        model, target = front.translation_model(source, fields["target_lang"])
        request.state.model = model
        if documents:
            translated = await translate_markup(request, front, model, documents, target, source, split)
        else:
            translated = await translate_texts(request, model, texts, target, source, split, line_breaks)
        billed = flag(fields.get("show_billed_characters"))
        detected = deepl_code(source, pairs()[0])
        return JSONResponse(
            {
                "translations": [
                    {"detected_source_language": detected, "text": text}
                    | ({"billed_characters": len(original)} if billed else {})
                    for text, original in zip(translated, texts)
                ]
            }
        )

    async def translate_texts(
        request: Request, model: str, texts: list[str], target: str, source: str, split: bool, line_breaks: bool
    ) -> list[str]:
        """Blank texts are answered as sent: DeepL takes them, heed's validation refuses an empty text."""
        todo = [i for i, text in enumerate(texts) if text.strip()]
        translated = list(texts)
        if todo:
            raw = RawRequest(
                [texts[i] for i in todo],
                target_lang=target,
                source_lang=source,
                split_sentences=split,
                line_breaks=line_breaks,
            )
            generations = await answer(request, front.submit(model, raw, request.state.request_id))
            for i, generation in zip(todo, generations, strict=True):
                translated[i] = generation.text
        return translated

    @router.api_route("/v2/languages", methods=["GET", "POST"], summary="DeepL: the source or the target languages")
    async def languages(request: Request) -> list[dict]:
        """`type` `source` (the default) or `target`; DeepL's clients send it in a GET's form body."""
        kind = (await read_fields(request)).get("type") or "source"
        sources, targets = pairs()
        if kind == "source":
            return [{"language": deepl_code(code, sources), "name": name(code)} for code in sources]
        if kind == "target":
            return [
                {"language": deepl_code(code, targets), "name": name(code), "supports_formality": False}
                for code in targets
            ]
        raise InvalidInput(f"Value for 'type' not supported: {kind!r} (source or target).")

    @router.api_route("/v2/usage", methods=["GET", "POST"], summary="DeepL: characters translated, and the limit")
    async def usage_counts(request: Request) -> dict:
        """The key's account (the guard's; without keys, everybody's): `character_count` is the
        characters its requests had translated, through any protocol, in the quota's current period
        (since the process started, for a key without a quota; each replica counts alone);
        `character_limit` its quota, or a number no count reaches, so that clients never report a
        limit reached (DeepL's clients check `count >= limit`)."""
        account: Account = request.state.account
        limit = account.character_limit
        return {"character_count": account.characters_used(), "character_limit": limit or CHARACTER_LIMIT}

    return router
