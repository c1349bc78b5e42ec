"""The fast reliability scenarios (CI): a real `heed serve` driven open-loop at 3x the capacity
measured just before, for a few seconds, in heed's native API, LibreTranslate's and OpenAI's
streamed completions at once; in every protocol it sheds with 503 + Retry-After, answers every
admitted request, its RSS plateaus and its gauges return to zero; SIGTERM in the middle of that
load loses no admitted request and exits 0. `make reliability` runs the same scenarios for longer
(and the injected-fault one) and prints the table."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtests.reliability import MODEL, Report, build_repo, capacity, plateaued, run_scenario, table
from loadtests.traffic import PROTOCOLS, Outcome

SECONDS = 6


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_repo(tmp_path_factory.mktemp("reliability-models"))


@pytest.fixture(scope="module")
def rate(repo, tmp_path_factory) -> float:
    return 3 * capacity(repo, tmp_path_factory.mktemp("capacity"), seconds=3)


def test_overload_is_shed_and_every_admitted_request_answered(repo, tmp_path, rate):
    reports = run_scenario("overload", repo, rate, SECONDS, tmp_path)
    print(table(reports))
    assert [r.protocol for r in reports] == list(PROTOCOLS)
    for report in reports:
        o = report.outcome
        assert o.shed > 0 and o.shed_without_retry_after == 0, (report.protocol, o)
        assert set(o.errors) <= {"overloaded"}, (report.protocol, o)
        assert report.admitted == o.answered > 0 and report.lost == 0 and report.unexpected_5xx == 0, o
        assert report.rss_plateau and report.recovery is not None and report.recovery < 30
        assert report.ok


def test_sigterm_under_overload_loses_no_admitted_request(repo, tmp_path, rate):
    reports = run_scenario("sigterm", repo, rate, SECONDS, tmp_path)
    print(table(reports))
    for report in reports:
        o = report.outcome
        assert report.exit_code == 0
        assert o.answered > 0 and o.shed + o.refused > 0, (report.protocol, o)  # served, then refused
        assert report.lost == 0 and report.unexpected_5xx == 0 and report.admitted == o.answered, o
        assert report.ok


def report(**outcome) -> Report:
    return Report("overload", "native", 30, 10, Outcome(**outcome), 1 << 27, True, 0.1)


def test_the_figures_flag_lost_requests_and_unexpected_5xx():
    assert report(statuses=Counter({200: 5, 503: 3})).ok
    assert report(statuses=Counter({200: 5}), transport_errors=1).lost == 1
    assert not report(statuses=Counter({200: 5}), transport_errors=1).ok
    bad = report(statuses=Counter({200: 5, 500: 2}), errors=Counter({"internal_error": 2}))
    assert bad.unexpected_5xx == 2 and bad.lost == 2 and not bad.ok
    assert not report(statuses=Counter({200: 5, 504: 1})).ok
    assert not report(statuses=Counter({503: 1}), shed_without_retry_after=1).ok
    assert not report(statuses=Counter({200: 1}), refused=1).ok  # refused connections only after SIGTERM


def test_rss_plateau_check():
    mib = 1 << 20
    flat = [(t, 100 * mib + (t % 3) * mib) for t in range(20)]
    assert plateaued(flat, 0, 19)
    growing = [(t, (100 + 20 * t) * mib) for t in range(20)]
    assert not plateaued(growing, 0, 19)


def test_failed_connections_heed_never_saw_are_not_lost():
    outcome = Outcome(transport_errors=2, unanswered_ids=["r3-libretranslate", "r9-native"])
    outcome.reconcile("... INFO heed.access [r3-libretranslate]: POST /translate 200 12.0ms\n")
    assert (outcome.transport_errors, outcome.refused, outcome.unanswered_ids) == (1, 1, ["r3-libretranslate"])


def test_every_load_and_benchmark_tool_imports():
    """`make reliability`, `make loadtest` and `heed bench` run these outside the suite: an import
    that breaks (a helper moved elsewhere) must fail here, not there."""
    import importlib
    import pkgutil

    import loadtests

    # locustfile is left to locust, which runs it in CI (tests/test_deploy_live.py): importing it
    # here would let gevent monkey-patch the test process
    names = [m.name for m in pkgutil.iter_modules(loadtests.__path__) if m.name != "locustfile"]
    assert {"rolling", "reliability", "bench_engine", "bench_http", "bench_long"} <= set(names)
    for name in names:
        importlib.import_module(f"loadtests.{name}")


def test_the_rolling_restarts_model_takes_the_load_tests_requests(tmp_path):
    """`make reliability`'s rolling restart drives locust's traffic (max_new_tokens 24,
    loadtests/locustfile.py) at the model it builds: that model must not force longer outputs, as
    the scenarios' model does (every locust request was a 422)."""
    from service.engine import Engine
    from service.settings import EngineConfig

    engine = Engine(build_repo(tmp_path, forced=False) / MODEL, EngineConfig(intra_op_threads=1))
    (result,) = engine.generate(["hello"], {"max_new_tokens": 24})
    assert result.output_tokens <= 24
