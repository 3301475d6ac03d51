"""docs/operations.md's "Metrics, health and failures" says what the code does.

Its interface example runs; its metrics table is the registry's list of metrics; its alert
rules parse and name only those metrics; the defaults it quotes are the code's.
"""

from __future__ import annotations

import re

import yaml
from readme_blocks import ROOT, block_containing

from qmtl_engine_kafka.operations import HealthState, WorkerMetrics, WorkerMonitor
from qmtl_engine_kafka.settings import KafkaEngineSettings

OPERATIONS = ROOT / "docs" / "operations.md"
TEXT = OPERATIONS.read_text(encoding="utf-8")
SECTION = TEXT[TEXT.index("## Metrics, health and failures") : TEXT.index("## Security")]


def _table_metrics() -> list[str]:
    return re.findall(r"^\| `(qmtl_worker_\w+)` \|", SECTION, re.MULTILINE)


def test_the_interface_example_runs() -> None:
    code = block_containing(OPERATIONS, "WorkerMonitor(")
    exec(compile(code, "docs/operations.md (interface example)", "exec"), {})


def test_the_metrics_table_lists_exactly_what_a_worker_exports() -> None:
    metrics = WorkerMetrics("p")
    metrics.batch(0.1, 1, 1, 1)
    metrics.dead_letters({"malformed": 1})
    metrics.node_failure("n", live=True)
    metrics.lag({("t", 0): 1})
    metrics.watermark(1.0)
    exported = set()
    for family in metrics.registry.collect():
        exported.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert sorted(_table_metrics()) == sorted(exported)


def test_the_alert_rules_parse_and_name_documented_metrics() -> None:
    (rules,) = re.findall(r"```yaml\n(.*?)```", SECTION, re.DOTALL)
    groups = yaml.safe_load(rules)["groups"]
    documented = set(_table_metrics())
    named = set()
    for rule in groups[0]["rules"]:
        assert set(rule) <= {"alert", "expr", "for"} and rule["alert"].startswith("Qmtl")
        for metric in re.findall(r"qmtl_worker_\w+", rule["expr"]):
            named.add(metric)
            assert metric in documented or metric.removesuffix("_bucket") in documented, metric
    # the alerts the issue asks for: lag growing, node failures, dead letters
    assert {"qmtl_worker_consumer_lag", "qmtl_worker_node_failures_total"} <= named
    assert "qmtl_worker_dead_letters_total" in named


def test_the_quoted_defaults_are_the_codes() -> None:
    settings = KafkaEngineSettings()
    assert settings.metrics_port is None and settings.metrics_host == "0.0.0.0"
    assert settings.failure_policy == "exit" and "`exit` (default)" in SECTION
    assert settings.max_node_failures == 3 and "`max_node_failures` (3)" in SECTION
    assert settings.node_retry_backoff_s == 1.0 and "`node_retry_backoff_s` (1 s" in SECTION
    assert settings.liveness_timeout_s == 60 and "`liveness_timeout_s` (60 s)" in SECTION
    assert settings.startup_timeout_s == 15 and "`startup_timeout_s`, 15 s" in SECTION
    assert settings.connect_timeout_s == 5 and "`connect_timeout_s`, 5 s" in SECTION
    assert HealthState().check_interval_s == 2 and "(every 2 s" in SECTION
    assert WorkerMonitor("p").lag_every_s == 5 and "refreshed every 5 s" in SECTION
    metrics = WorkerMetrics("p")
    assert metrics.max_lag_series == 100 and "capped at 100 partitions" in SECTION
    assert metrics._node_label.limit == 20 and "the first 20 failing nodes" in SECTION
