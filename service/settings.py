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
