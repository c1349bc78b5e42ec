"""`heed serve` in a subprocess on 127.0.0.1: one implementation for the HTTP tests, the
reliability scenarios and the HTTP benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeedServer:
    """One `heed serve` process on a free loopback port; `env` adds `HEED_*` settings; its output
    goes to `log`, which error messages quote."""

    def __init__(self, repo: Path, log: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "service.cli", "serve", "--model-repo", str(repo), "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=os.environ | env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"heed serve exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"heed serve not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code; a server that does not exit in time is killed and this raises."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode
