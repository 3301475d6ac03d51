"""The Redis side of the project's service tooling: ``scripts/services.py --redis`` and the
``redis_url`` fixture of ``qmtl.testing.services`` that this package's integration tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "scripts" / "services.py"

PROBE = """
import os, socket, sys
url = os.environ["QMTL_TEST_REDIS_URL"]
port = int(url.rsplit(":", 1)[1].split("/")[0])
with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
    sock.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
    assert sock.recv(16).startswith(b"+PONG")
print(url, flush=True)
sys.exit(int(sys.argv[1]))
"""


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _answers(url: str, launcher: Any) -> bool:
    return bool(launcher.ping(int(url.rsplit(":", 1)[1].split("/")[0])))


def test_services_runs_the_command_with_redis_and_stops_it(launcher: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(SERVICES), "--redis", "--", sys.executable, "-c", PROBE, "3"],
        env=_env(QMTL_TEST_REDIS_URL=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr  # the command's own exit code
    url = result.stdout.strip()
    assert url.startswith("redis://127.0.0.1:")
    assert "redis: stopped" in result.stderr
    assert not _answers(url, launcher)


def test_services_reuses_a_redis_named_in_the_environment() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SERVICES),
            "--redis",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['QMTL_TEST_REDIS_URL'])",
        ],
        env=_env(QMTL_TEST_REDIS_URL="redis://example.invalid:6379/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "redis://example.invalid:6379/0"
    assert "reusing" in result.stderr
    assert "starting" not in result.stderr


def test_services_stops_redis_when_terminated(launcher: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            str(SERVICES),
            "--redis",
            "--",
            sys.executable,
            "-c",
            "import os, time; print(os.environ['QMTL_TEST_REDIS_URL'], flush=True); time.sleep(60)",
        ],
        env=_env(QMTL_TEST_REDIS_URL=None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert _answers(url, launcher)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert "redis: stopped" in stderr
    assert not _answers(url, launcher)


def test_services_reports_a_command_that_cannot_start(launcher: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(SERVICES), "--redis", "--", "/nonexistent/command"],
        env=_env(QMTL_TEST_REDIS_URL=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 127
    assert "cannot run" in result.stderr
    assert "redis: stopped" in result.stderr


FIXTURE_TEST = """
def test_needs_redis(redis_url):
    assert redis_url.startswith("redis://")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ci", "outcome"),
    [(None, "1 skipped"), ("true", "1 error")],
)
def test_redis_url_fixture_skips_or_fails_under_ci(
    tmp_path: Path, ci: str | None, outcome: str
) -> None:
    (tmp_path / "test_probe.py").write_text(FIXTURE_TEST)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "qmtl.testing.services",
            "-q",
            "-rse",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_probe.py"),
        ],
        # No service variable, and no Docker engine to fall back on.
        env=_env(QMTL_TEST_REDIS_URL=None, CI=ci, DOCKER_HOST="unix:///nonexistent.sock"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert outcome in result.stdout, result.stdout
    assert "QMTL_TEST_REDIS_URL is unset" in result.stdout
    assert "scripts/services.py --redis" in result.stdout


@pytest.mark.slow
def test_redis_url_fixture_uses_the_environment(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(
        "def test_url(redis_url):\n    assert redis_url == 'redis://given:1/0'\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "qmtl.testing.services",
            "-q",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_probe.py"),
        ],
        env=_env(QMTL_TEST_REDIS_URL="redis://given:1/0", CI="true"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert "1 passed" in result.stdout, result.stdout
