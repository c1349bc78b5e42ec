"""Wait until a heed server answers `GET /readyz` with 200, or give up after a timeout.

`make loadtest` and the deployment tests start heed in the background and must not send load
before the models are loaded and warmed (before that, /readyz answers 503).

    python -m loadtests.wait_ready http://127.0.0.1:8089 --timeout 120
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def wait_ready(base_url: str, timeout: float, interval: float = 0.25) -> bool:
    """True once /readyz returns 200 within `timeout` seconds; False if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while loading: both mean "not yet"
        time.sleep(interval)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.wait_ready", description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args(argv)
    if wait_ready(args.base_url, args.timeout):
        return 0
    print(f"{args.base_url} was not ready after {args.timeout:g}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
