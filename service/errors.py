"""heed's error types. Every bad request raises a `RequestError`; the HTTP layer's error builder
(service/http/errors.py) turns its `status`, `type` and message into the protocol's error shape."""

from __future__ import annotations


class HeedError(Exception):
    """Base of every error heed raises on purpose."""


class ModelLoadError(HeedError):
    """A model directory cannot be served (bad manifest, missing or corrupt files)."""


class SettingsError(HeedError):
    """A setting names something heed cannot use (an API keys file that does not validate)."""


class RequestError(HeedError):
    """A request heed refuses; the message tells the caller what to change."""

    status: int = 400
    type: str = "invalid_request"
    retry_after: int | None = None  # seconds, sent as Retry-After (else the server's, with 503)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidOptions(RequestError):
    status = 422
    type = "invalid_options"


class InvalidInput(RequestError):
    status = 422
    type = "invalid_input"


class InputTooLong(RequestError):
    status = 413
    type = "input_too_long"


class UnknownModel(RequestError):
    status = 404
    type = "unknown_model"


class WrongTask(RequestError):
    status = 422
    type = "wrong_task"


class UnsupportedLanguage(RequestError):
    status = 422
    type = "unsupported_language"


class RateLimited(RequestError):
    """The API key's requests per minute are spent (service/http/quotas.py)."""

    status = 429
    type = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """The API key's characters for the period are spent (DeepL's clients expect 456 for it)."""

    type = "quota_exceeded"


class Overloaded(RequestError):
    status = 503
    type = "overloaded"


class DeadlineExceeded(RequestError):
    status = 504
    type = "deadline_exceeded"


class InternalError(RequestError):
    """A fault of heed's, not of the request (answered as 500 so that no request goes unanswered)."""

    status = 500
    type = "internal_error"


class Cancelled(RequestError):
    """The client went away; nobody reads this answer."""

    status = 499
    type = "cancelled"
