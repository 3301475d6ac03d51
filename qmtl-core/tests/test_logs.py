"""Library logging leaves the user's stdout alone (qmtl.logs)."""

from __future__ import annotations

import subprocess
import sys

import structlog

from qmtl.logs import get_logger

SCRIPT = """
from qmtl import Node
from qmtl.analyzer import Analyzer

analyzer = Analyzer("logs")
analyzer.add_node(Node("bad", fn=lambda: 1 / 0))
analyzer.execute()
print("result printed by the user")
"""


def test_an_unconfigured_application_sees_warnings_on_stderr_and_nothing_on_stdout() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "result printed by the user\n"
    assert "event='qmtl.analyzer.node_failed'" in done.stderr
    assert "node='bad'" in done.stderr


def test_info_events_reach_a_stdlib_handler_the_application_configured() -> None:
    script = "import logging; logging.basicConfig(level=logging.INFO)\n" + SCRIPT.replace(
        "analyzer.execute()",
        "analyzer.execute()\nfrom qmtl.logs import get_logger\n"
        "get_logger('qmtl.demo').info('qmtl.demo.hello', answer=42)",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "INFO:qmtl.demo:event='qmtl.demo.hello' answer=42" in done.stderr


def test_a_structlog_configuration_takes_over_even_after_import() -> None:
    log = get_logger("qmtl.demo")
    with structlog.testing.capture_logs() as logs:
        log.info("qmtl.demo.captured", n=1)
    assert logs == [{"event": "qmtl.demo.captured", "n": 1, "log_level": "info"}]
