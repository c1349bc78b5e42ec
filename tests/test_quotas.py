"""Per-key limits (service/http/quotas.py, enforced by the guard and validation): the counters on
a fake clock, the keys file, then a real `heed serve` with keys of each kind: a key over its
requests per minute or its characters is refused in each protocol's way (429 + Retry-After;
DeepL's 456 for characters, which the official `deepl` client raises as QuotaExceededException)
while another key is served, and DeepL's `/v2/usage` reports each key's own count and limit."""

from __future__ import annotations

import deepl
import httpx
import pytest

from service.errors import InputTooLong, QuotaExceeded, RateLimited, SettingsError
from service.http.deepl import CHARACTER_LIMIT
from service.http.quotas import Account, Charge, KeyLimits, KeyRing, read_keys_file
from service.settings import Settings
from tests.http_server import running

KEYS_FILE = """
[keys.hurried]
key = "hurried-key"
requests_per_minute = 3

[keys.wordy]
key = "wordy-key"
characters_per_period = 40
period_seconds = 3600

[keys.refunded]
key = "refunded-key"
characters_per_period = 1000

[keys.free]
key = "free-key"
"""
TEXT = "one two three four five six seven eight"[:30]  # 30 characters


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_are_a_bucket_refilled_at_that_rate():
    clock = Clock()
    account = Account("a", KeyLimits(key="k", requests_per_minute=3), clock)
    for _ in range(3):
        account.admit_request()
    with pytest.raises(RateLimited) as refused:
        account.admit_request()
    assert refused.value.retry_after == 20 and refused.value.status == 429
    clock.now += 20
    account.admit_request()  # one is back after 60 / 3 s
    with pytest.raises(RateLimited):
        account.admit_request()
    clock.now += 3600
    for _ in range(3):  # never more than the bucket holds, however long the pause
        account.admit_request()
    with pytest.raises(RateLimited):
        account.admit_request()


def test_characters_are_counted_per_period_and_refunded_within_it():
    clock = Clock()
    account = Account("a", KeyLimits(key="k", characters_per_period=100, period_seconds=60), clock)
    first = Charge(account)
    first.charge(70)
    clock.now += 10
    with pytest.raises(QuotaExceeded) as refused:
        Charge(account).charge(31)
    assert refused.value.retry_after == 50 and account.characters_used() == 70  # refused: not counted
    failed = Charge(account)
    failed.charge(30)
    failed.refund()  # the request failed: its characters come back
    assert account.characters_used() == 70
    with pytest.raises(InputTooLong, match="more than this API key's quota of 100"):  # 413: waiting cannot help
        Charge(account).charge(101)
    clock.now += 50  # a new period
    assert account.characters_used() == 0
    first.refund()  # a charge of the last period is not refunded into this one
    assert account.characters_used() == 0
    Charge(account).charge(100)
    assert account.characters_used() == 100


def test_keys_file_and_plain_keys(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(KEYS_FILE)
    ring = KeyRing.from_settings(Settings(api_keys="plain-1,plain-2", api_keys_file=path))
    assert ring.keys == [b"plain-1", b"plain-2", b"hurried-key", b"wordy-key", b"refunded-key", b"free-key"]
    assert [a.name for a in ring.accounts][2:4] == ["hurried", "wordy"]
    assert ring.accounts[0].character_limit is None and ring.accounts[3].character_limit == 40
    assert ring.accounts[3].period == 3600 and ring.accounts[4].period == 30 * 24 * 3600
    assert len({id(a) for a in ring.accounts} | {id(ring.anonymous)}) == 7  # nothing shared


@pytest.mark.parametrize(
    "text",
    [
        '[keys.a]\nkey = "secret-value"\nrequests_per_minut = 3\n',  # a misspelt field
        '[keys.a]\nkey = "secret-value"\nrequests_per_minute = 0\n',
        '[keys.a]\nkey = "secret-value"\ncharacters_per_period = -5\n',
        '[keys.a]\nkey = ""\n',
        "[keys.a\n",
        'keys = "secret-value"\n',
    ],
)
def test_a_bad_keys_file_is_refused_without_showing_keys(tmp_path, text):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as refused:
        read_keys_file(path)
    assert str(path) in str(refused.value) and "secret-value" not in str(refused.value)


def test_a_key_listed_twice_or_a_missing_file_is_refused(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[keys.a]\nkey = "same"\n')
    with pytest.raises(SettingsError, match="listed twice"):
        KeyRing.from_settings(Settings(api_keys="same", api_keys_file=path))
    with pytest.raises(SettingsError, match="nowhere.toml"):
        KeyRing.from_settings(Settings(api_keys_file=tmp_path / "nowhere.toml"))


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    where = tmp_path_factory.mktemp("quotas")
    (where / "keys.toml").write_text(KEYS_FILE)
    env = {"HEED_API_KEYS": "plain-key", "HEED_API_KEYS_FILE": str(where / "keys.toml"), "HEED_MAX_NEW_TOKENS": "4"}
    with running(http_repo, where / "quotas.log", **env) as s:
        yield s


def post(server, key: str, path: str, body: dict) -> httpx.Response:
    scheme = "DeepL-Auth-Key" if path.startswith("/v2/") else "Bearer"
    return server.client.post(path, json=body, headers={"Authorization": f"{scheme} {key}"})


def usage(server, key: str) -> dict:
    r = server.client.get("/v2/usage", headers={"Authorization": f"DeepL-Auth-Key {key}"})
    assert r.status_code == 200, r.text
    return r.json()


NATIVE = ("/v1/translate", {"text": TEXT, "model": "tiny"})
LIBRETRANSLATE = ("/translate", {"q": TEXT, "source": "en", "target": "de"})
DEEPL = ("/v2/translate", {"text": [TEXT], "target_lang": "DE"})


def test_a_key_over_its_requests_per_minute_gets_429_while_another_is_served(server):
    for _ in range(3):
        assert post(server, "hurried-key", *NATIVE).status_code == 200
    native = post(server, "hurried-key", *NATIVE)
    assert native.status_code == 429 and native.json()["error"]["type"] == "rate_limited", native.text
    assert 1 <= int(native.headers["retry-after"]) <= 20
    body = LIBRETRANSLATE[1] | {"api_key": "hurried-key"}  # the key as LibreTranslate's clients send it
    lt = server.client.post("/translate", json=body)
    assert lt.status_code == 429 and set(lt.json()) == {"error"} and "retry-after" in lt.headers, lt.text
    dl = post(server, "hurried-key", *DEEPL)
    assert dl.status_code == 429 and set(dl.json()) == {"message"} and "retry-after" in dl.headers, dl.text
    assert post(server, "free-key", *NATIVE).status_code == 200
    assert post(server, "plain-key", *NATIVE).status_code == 200


def test_a_key_over_its_characters_gets_429_or_deepls_456_while_another_is_served(server):
    assert usage(server, "wordy-key") == {"character_count": 0, "character_limit": 40}
    assert post(server, "wordy-key", *DEEPL).status_code == 200  # 30 of 40
    native = post(server, "wordy-key", *NATIVE)
    assert native.status_code == 429 and native.json()["error"]["type"] == "quota_exceeded", native.text
    assert 3500 < int(native.headers["retry-after"]) <= 3600
    lt = post(server, "wordy-key", *LIBRETRANSLATE)
    assert lt.status_code == 429 and set(lt.json()) == {"error"}, lt.text
    dl = post(server, "wordy-key", *DEEPL)
    assert dl.status_code == 456 and set(dl.json()) == {"message"}, dl.text
    assert post(server, "wordy-key", "/v1/translate", {"text": "ten chars!", "model": "tiny"}).status_code == 200
    assert usage(server, "wordy-key") == {"character_count": 40, "character_limit": 40}
    assert post(server, "free-key", *DEEPL).status_code == 200


def test_the_deepl_client_raises_its_quota_exception_on_456_and_reads_the_usage(server):
    saved = deepl.http_client.max_network_retries
    deepl.http_client.max_network_retries = 0
    try:
        translator = deepl.Translator("wordy-key", server_url=server.url)
        with pytest.raises(deepl.QuotaExceededException):
            translator.translate_text("one", target_lang="DE")
        spent = translator.get_usage()
        assert spent.character.count == spent.character.limit == 40 and spent.any_limit_reached
        other = deepl.Translator("free-key", server_url=server.url)
        assert other.translate_text("one", target_lang="DE").text
        assert not other.get_usage().any_limit_reached
    finally:
        deepl.http_client.max_network_retries = saved


def test_usage_counts_each_keys_characters_through_every_protocol_and_nothing_of_failed_requests(server):
    before = usage(server, "refunded-key")
    assert before == {"character_count": 0, "character_limit": 1000}
    for path, body in (NATIVE, LIBRETRANSLATE, DEEPL):
        assert post(server, "refunded-key", path, body).status_code == 200
    assert usage(server, "refunded-key")["character_count"] == 3 * len(TEXT)
    choices = post(server, "refunded-key", "/v1/completions", {"model": "tiny", "prompt": TEXT, "n": 3, "seed": 1})
    assert choices.status_code == 200 and len(choices.json()["choices"]) == 3, choices.text
    assert usage(server, "refunded-key")["character_count"] == 4 * len(TEXT)  # n choices: the prompt sent once
    late = post(server, "refunded-key", "/v1/translate", {"text": TEXT, "model": "tiny", "timeout": 1e-9})
    assert late.status_code == 504, late.text  # validated (charged), then past its deadline: refunded
    refused = post(server, "refunded-key", "/v1/translate", {"text": "\x00" + TEXT})
    assert refused.status_code == 422  # refused by validation: never charged
    assert usage(server, "refunded-key")["character_count"] == 4 * len(TEXT)
    assert usage(server, "plain-key")["character_limit"] == CHARACTER_LIMIT  # HEED_API_KEYS: no limits
