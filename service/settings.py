"""Configuration: the engine's (`EngineConfig`, given explicitly: `heed generate` builds it from its
flags) and the HTTP server's (`Settings`, from `HEED_*` variables, which includes the engine's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.logformat import LogFormat


class EngineConfig(BaseModel):
    """How one model's engine runs; each default is defined here once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU"
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per model; 0 = all cores")
    ort_spinning: bool = Field(
        False,
        description="ONNX Runtime's threads busy-wait between operators: faster decoding when heed has the cores "
        "to itself (`heed generate` turns it on), but they take the CPU the HTTP server needs (docs/performance.md)",
    )
    int8_kernels: Literal["auto", "signed", "unsigned"] = Field(
        "auto",
        description="int8 models' weights: auto picks from the CPU's flags at load (signed where x86 has VNNI or "
        "AMX and on other architectures, unsigned on x86 without: exact there); signed or unsigned forces one "
        "(docs/performance.md)",
    )
    kv_rows: int = Field(64, ge=1, description="decoding rows per model (a beam of 4 takes 4)")
    max_new_tokens: int = Field(512, ge=1, description="cap on any request's output tokens, under the model's own")
    max_beam_size: int = Field(8, ge=1)


class Settings(BaseSettings, EngineConfig):
    """The HTTP service's settings; the engine's fields are read from `HEED_*` too."""

    model_config = SettingsConfigDict(env_prefix="HEED_", extra="ignore", frozen=True)

    model_repo: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    queue_size: int = Field(256, ge=1, description="requests per model waiting for KV rows; more get 503")
    request_timeout: float = Field(
        60.0, gt=0, description="seconds from arrival to answer (queueing included); later -> 504"
    )
    shutdown_grace: float = Field(30.0, ge=0, description="seconds in-flight requests may take after SIGTERM")
    keep_alive: float = Field(
        75.0,
        gt=0,
        description="seconds an idle client connection stays open; longer than clients' and proxies' own "
        "(httpx 5 s, nginx 60 s), so that they close first and never send on a connection the server is closing",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open client connections: one more closes the connection that has waited longest for a "
        "request's headers; with every connection busy, a request gets 503 + Retry-After; past twice as many, "
        "a new connection is closed at once, unanswered (service/http/connections.py)",
    )
    read_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client has to send a request's headers (from connecting, or from the request's "
        "first byte on a kept-alive connection), and again its body; later -> 408 and the connection is closed",
    )
    max_texts: int = Field(64, ge=1, description="texts in one request")
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with 503")
    default_translate_model: str | None = Field(None, description="model of /v1/translate without 'model'")
    default_summarize_model: str | None = Field(None, description="model of /v1/summarize without 'model'")
    warmup: bool = Field(True, description="decode a few tokens per model before reporting ready")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: LogFormat = Field("text", description="text, or json: one JSON object per line (service/logformat.py)")
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector to send request traces to (service/tracing.py), e.g. "
        "http://collector:4318; the standard OTEL_EXPORTER_OTLP_* variables turn tracing on too",
    )

    # Security and request limits (service/http/guard.py).
    api_keys: SecretStr | None = Field(
        None, description="comma-separated API keys; when set, /v1 and the docs need 'Authorization: Bearer <key>'"
    )
    api_keys_file: Path | None = Field(
        None,
        description="a TOML file of API keys, each with optional limits on requests per minute and characters "
        "per period (service/http/quotas.py); accepted besides HEED_API_KEYS's, which have no limits",
    )
    cors_origins: str | None = Field(None, description="comma-separated origins allowed by CORS; unset = CORS off")
    max_body_bytes: int = Field(1 << 20, ge=1, description="request bodies over this many bytes get 413")
    max_input_chars: int = Field(100_000, ge=1, description="characters of all texts of one request; more -> 413")

    # Testing only, read at start (no request can turn it on): the Nth decoder run after warm-up
    # fails inside ONNX Runtime, to test that one failing request does not take the server down.
    fault_decoder_run: int | None = Field(None, ge=1, description="testing only: fail the Nth decoder run")

    @property
    def engine(self) -> EngineConfig:
        return EngineConfig(**{name: getattr(self, name) for name in EngineConfig.model_fields})

    @property
    def api_key_list(self) -> list[str]:
        return parse_list(self.api_keys.get_secret_value() if self.api_keys else None)

    @property
    def cors_origin_list(self) -> list[str]:
        return parse_list(self.cors_origins)


def parse_list(value: str | None) -> list[str]:
    """A comma-separated setting as a list, blanks dropped."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]
