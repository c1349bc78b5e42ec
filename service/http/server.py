"""`heed serve`: the app under uvicorn, with heed's graceful shutdown.

On SIGTERM readiness turns false, new requests get 503, requests in flight finish (up to
`HEED_SHUTDOWN_GRACE` seconds), then the process exits 0. A second signal stops at once.
uvicorn's protocol is heed's (service/http/connections.py): it counts the open connections and
bounds the time a request's headers may take.
"""

from __future__ import annotations

import logging
import resource
import threading
import time

import uvicorn
from fastapi import FastAPI

from service.http.accounting import RequestIdFilter
from service.http.app import create_app
from service.http.connections import protocol
from service.logformat import configure_logging
from service.settings import Settings

log = logging.getLogger("heed.server")


class GracefulServer(uvicorn.Server):
    """uvicorn with heed's SIGTERM: drain first, then uvicorn's own shutdown. The signal is
    handled, not re-raised, so the process exits 0."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace: float):
        super().__init__(config)
        self.front, self.in_flight, self.grace = app.state.front, app.state.in_flight, grace

    def handle_exit(self, sig: int, frame) -> None:
        if self.front.draining:
            self.should_exit = self.force_exit = True
            return
        self.front.begin_drain()
        # logged on the drain thread: the signal interrupts whatever runs, a request's task (and
        # its request id) included, while a new thread starts outside any request's context
        threading.Thread(target=self._drain, args=(sig,), name="heed-drain", daemon=True).start()

    def _drain(self, sig: int) -> None:
        log.info("signal %d: draining (grace %.0fs)", sig, self.grace)
        if not self._wait_idle(self.grace):
            log.warning("grace period over with requests in flight; they are answered 503")
        self.front.stop(0)  # answers what is left, so that uvicorn's wait for open connections ends
        self.should_exit = True

    def _wait_idle(self, timeout: float) -> bool:
        """Until no API request is in flight and no model has work (or `timeout` passes)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.in_flight.count == 0 and self.front.idle:
                return True
            time.sleep(0.05)
        return False


SPARE_DESCRIPTORS = 256  # beyond the connections: model files, logs, the listening socket, threads' pipes


def reserve_descriptors(needed: int) -> None:
    """Raise the process's soft limit on open files towards `needed` (within the hard limit, as Go's
    runtime and nginx's worker_rlimit_nofile do): a shell's default of 1024 is below the connections
    that `HEED_MAX_CONNECTIONS` lets in, and past it accept() fails for every client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("open files are limited to %d; HEED_MAX_CONNECTIONS needs about %d (ulimit -n)", target, needed)


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format).addFilter(RequestIdFilter())
    app = create_app(settings)
    reserve_descriptors(app.state.connections.hard_limit + SPARE_DESCRIPTORS)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        log_config=None,  # uvicorn's records go through heed's handler (service/logformat.py)
        access_log=False,
        timeout_keep_alive=settings.keep_alive,
        http=protocol(app.state.connections, settings.read_timeout),
    )
    server = GracefulServer(config, app, settings.shutdown_grace)
    server.run()
    return 0 if server.started else 1
