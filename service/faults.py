"""Test-only fault injection: a real ONNX Runtime failure in one decoder run.

Enabled only by `HEED_FAULT_DECODER_RUN=N`, read once at start: nothing a request carries can turn
it on. The Nth decoder run after warm-up is given a feed of the wrong type, so ONNX Runtime itself
raises (the same path as a genuine kernel or allocation failure); every other run is untouched.
The reliability tests use it to check that the request in that step gets a 500 with its request id
while the scheduler keeps serving the others.
"""

from __future__ import annotations

import logging

import numpy as np

from service import graph

log = logging.getLogger("heed.faults")
POSITIONS = graph.DECODER_INPUTS[1]


class FailingDecoder:
    """Wraps an `ort.InferenceSession`: its `fail_at`-th run, plain or through an I/O binding,
    gets float positions (ORT refuses them)."""

    def __init__(self, session, fail_at: int):
        self.session, self.fail_at, self.runs = session, fail_at, 0

    def _fails(self) -> bool:
        self.runs += 1
        return self.runs == self.fail_at

    def run(self, outputs, feeds: dict[str, np.ndarray]):
        if self._fails():
            feeds = {**feeds, POSITIONS: feeds[POSITIONS].astype(np.float32)}
        return self.session.run(outputs, feeds)

    def run_with_iobinding(self, binding, *args):
        if self._fails():
            binding.bind_cpu_input(POSITIONS, np.zeros((1, 1), np.float32))
        return self.session.run_with_iobinding(binding, *args)

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def inject_decoder_fault(runner, fail_at: int) -> None:
    """Make `runner`'s `fail_at`-th decoder run from now fail inside ONNX Runtime."""
    log.warning("fault injection on: decoder run %d will fail (HEED_FAULT_DECODER_RUN; testing only)", fail_at)
    runner.decoder = FailingDecoder(runner.decoder, fail_at)
