"""Settings from the environment (`HEED_*`) or the command line; one object for the whole process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEED_", extra="ignore")

    model_repo: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU"
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per model; 0 = all cores")
    kv_rows: int = Field(64, ge=1, description="decoding rows per model (a beam of 4 takes 4)")

    max_new_tokens: int = Field(512, ge=1)
    max_beam_size: int = Field(8, ge=1)

    # The HTTP service (`heed serve`).
    queue_size: int = Field(256, ge=1, description="requests per model waiting for KV rows; more get 503")
    request_timeout: float = Field(
        60.0, gt=0, description="seconds from arrival to answer (queueing included); later -> 504"
    )
    shutdown_grace: float = Field(30.0, ge=0, description="seconds in-flight requests may take after SIGTERM")
    max_texts: int = Field(64, ge=1, description="texts in one request")
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with 503")
    default_translate_model: str | None = Field(None, description="model of /v1/translate without 'model'")
    default_summarize_model: str | None = Field(None, description="model of /v1/summarize without 'model'")
    warmup: bool = Field(True, description="decode a few tokens per model before reporting ready")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
