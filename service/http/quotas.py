"""API keys and their limits: requests per minute and characters per period, per key, as
LibreTranslate (`req_limit`) and DeepL (a character quota) offer them.

Keys come from `HEED_API_KEYS` (comma-separated, no limits) and from `HEED_API_KEYS_FILE`, a TOML
file with one table per client, named as the operator likes (the name shows in the log, never
the key):

    [keys.newsroom]
    key = "nr-7f3a9c"
    requests_per_minute = 120          # optional
    characters_per_period = 500000     # optional
    period_seconds = 2592000           # 30 days, the default

Every key has an `Account` of its own (and a server without keys one `Account` for everybody,
without limits, so that DeepL's `/v2/usage` still counts): nothing is shared between keys.

- Requests per minute are a token bucket: up to `requests_per_minute` at once, refilled at that
  rate; past it a request is answered 429 with `Retry-After` (the guard, before the body is read).
- Characters per period: the characters of the texts a request submits to a model, counted when
  it is validated (`service.validation.ALLOWANCE`, which every protocol passes through) and given
  back when the request fails; a request that would take the count over the limit is refused
  (429, DeepL's 456) with `Retry-After` the time left in the period, which starts at the key's
  first charge after the process starts.

Counters live in this process's memory: they start at zero with it and each replica counts
alone (N replicas behind a balancer give a key about N times its limits). The event loop's
single thread does all counting, so there are no locks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from service.errors import InputTooLong, QuotaExceeded, RateLimited, SettingsError
from service.settings import Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (pyproject.toml)
    import tomli as tomllib

log = logging.getLogger("heed.quotas")


class KeyLimits(BaseModel):
    """One key of `HEED_API_KEYS_FILE`; each default is defined here once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr = Field(min_length=1)
    requests_per_minute: int | None = Field(None, ge=1, description="None: no limit")
    characters_per_period: int | None = Field(None, ge=1, description="None: no limit")
    period_seconds: float = Field(30 * 24 * 3600.0, gt=0, description="the character quota's period")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: dict[str, KeyLimits]


class Account:
    """One key's counters; `clock` is monotonic seconds (a test may give its own)."""

    def __init__(self, name: str, limits: KeyLimits | None = None, clock: Callable[[], float] = time.monotonic):
        self.name, self.clock = name, clock
        self.requests_per_minute = limits.requests_per_minute if limits else None
        self.character_limit = limits.characters_per_period if limits else None
        self.period = limits.period_seconds if limits else math.inf
        self._tokens, self._filled = float(self.requests_per_minute or 0), clock()
        self._period_start: float | None = None
        self._used = 0

    def admit_request(self) -> None:
        """Take one request from the bucket, or raise `RateLimited` saying when one is back."""
        rate = self.requests_per_minute
        if rate is None:
            return
        now = self.clock()
        self._tokens = min(float(rate), self._tokens + (now - self._filled) * rate / 60)
        self._filled = now
        if self._tokens < 1:
            wait = math.ceil((1 - self._tokens) * 60 / rate)
            log.info("API key %r is over its %d requests per minute", self.name, rate)
            raise RateLimited(f"this API key's {rate} requests per minute are spent; retry in {wait} s", wait)
        self._tokens -= 1

    def characters_used(self) -> int:
        """The characters counted in the current period."""
        self._roll()
        return self._used

    def charge(self, characters: int) -> float:
        """Count a request's characters, or raise `QuotaExceeded` without counting them; returns
        the period they were counted in (`refund` takes it)."""
        now = self._roll()
        limit = self.character_limit
        if limit is not None and characters > limit:  # no wait would let it through: not a 429
            raise InputTooLong(f"this request's {characters} characters are more than this API key's quota of {limit}")
        if limit is not None and self._used + characters > limit:
            if self._period_start is None:  # no charge yet: the period starts now, with this refusal
                self._period_start = now
            wait = max(1, math.ceil(self._period_start + self.period - now))
            log.info("API key %r is over its character quota", self.name)
            message = (
                f"this API key's character quota is spent: {self._used} of {limit} characters used in this "
                f"period and this request has {characters}; the quota renews in {wait} s"
            )
            raise QuotaExceeded(message, wait)
        if self._period_start is None:
            self._period_start = now
        self._used += characters
        return self._period_start

    def refund(self, characters: int, period: float) -> None:
        """Give back what a failed request was charged, if its period is still the current one."""
        self._roll()
        if period == self._period_start:
            self._used = max(0, self._used - characters)

    def _roll(self) -> float:
        now = self.clock()
        if self._period_start is not None and now >= self._period_start + self.period:
            self._period_start, self._used = None, 0
        return now


class Charge:
    """A request's characters, charged to its account through validation (`Allowance`), and
    given back when the request's answer is an error."""

    def __init__(self, account: Account):
        self.account = account
        self._charged: list[tuple[int, float]] = []

    def charge(self, characters: int) -> None:
        self._charged.append((characters, self.account.charge(characters)))

    def refund(self) -> None:
        for characters, period in self._charged:
            self.account.refund(characters, period)
        self._charged.clear()


class KeyRing:
    """The accepted keys and, in the same order, their accounts (the guard matches the keys);
    no keys: nothing is asked, and one account counts for everybody."""

    def __init__(self, limits: dict[str, KeyLimits], clock: Callable[[], float] = time.monotonic):
        self.keys = [entry.key.get_secret_value().encode() for entry in limits.values()]
        if len(set(self.keys)) != len(self.keys):
            raise SettingsError("an API key is listed twice (HEED_API_KEYS and HEED_API_KEYS_FILE together)")
        self.accounts = [Account(name, entry, clock) for name, entry in limits.items()]
        self.anonymous = Account("(no key)", clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        plain = {f"HEED_API_KEYS[{i}]": KeyLimits(key=key) for i, key in enumerate(settings.api_key_list)}
        listed = read_keys_file(settings.api_keys_file) if settings.api_keys_file else {}
        return cls(plain | listed)


def read_keys_file(path: Path) -> dict[str, KeyLimits]:
    try:
        return KeysFile.model_validate(tomllib.loads(Path(path).read_text())).keys
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"HEED_API_KEYS_FILE {path}: {e}") from e
    except ValidationError as e:  # the fields' names and what is wrong, never their values (keys)
        wrong = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors(include_input=False))
        raise SettingsError(f"HEED_API_KEYS_FILE {path}: {wrong}") from e
