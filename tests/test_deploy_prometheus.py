"""Prometheus configuration and alert rules, checked by Prometheus' own `promtool` (Debian package
`prometheus`, installed by `make system-deps`): the config and rules load, and the rule unit tests
(deploy/prometheus/heed-alerts.test.yml) pass, and fail when a rule is broken."""

from __future__ import annotations

import shutil

import yaml

from tests.deploy_helpers import DEPLOY, run, tool

PROMETHEUS = DEPLOY / "prometheus"
ALERTS = {"HeedHighErrorRatio", "HeedHighP99Latency", "HeedQueueSaturated", "HeedNotReady", "HeedDown"}


def test_config_and_rules_load():
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_alert_has_a_unit_test_and_the_tests_pass():
    rules = yaml.safe_load((PROMETHEUS / "heed-alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == ALERTS
    tests = yaml.safe_load((PROMETHEUS / "heed-alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == alerts  # each one is shown to fire, not only to stay silent
    result = run(tool("promtool"), "test", "rules", str(PROMETHEUS / "heed-alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_catch_a_broken_rule(tmp_path):
    """The unit tests are not vacuous: counting 4xx as errors (a plausible slip) must fail them."""
    shutil.copy(PROMETHEUS / "heed-alerts.test.yml", tmp_path)
    rules = (PROMETHEUS / "heed-alerts.yml").read_text()
    broken = rules.replace('status=~"5.."', 'status=~"[45].."')
    assert broken != rules
    (tmp_path / "heed-alerts.yml").write_text(broken)
    result = run(tool("promtool"), "test", "rules", str(tmp_path / "heed-alerts.test.yml"))
    assert result.returncode != 0
    assert "HeedHighErrorRatio" in result.stdout + result.stderr
