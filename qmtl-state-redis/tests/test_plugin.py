"""Unit tests (no server): the plugin registers cheaply and the seed constructor is lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qmtl.errors import IntervalError
from qmtl_state_redis import StateManager


def test_constructor_keeps_settings_and_does_not_connect() -> None:
    # 13.6/46: nothing connects until first use, so an unreachable URL constructs fine.
    manager = StateManager(
        redis_uri="redis://127.0.0.1:1/0",
        connection_pool_size=7,
        connection_timeout=2.5,
        retry_on_timeout=False,
        health_check_interval=15,
    )
    assert manager.redis_uri == "redis://127.0.0.1:1/0"
    assert manager.max_connections == 7
    assert manager.socket_timeout == 2.5
    assert manager.retry_on_timeout is False
    assert manager.health_check_interval == 15
    assert manager.settings.max_connections == 7
    assert manager.settings.connect_timeout == 2.5


def test_unknown_interval_is_an_error() -> None:
    manager = StateManager(redis_uri="redis://127.0.0.1:1/0")
    with pytest.raises(IntervalError, match="Unknown interval"):
        manager.save_history("node", "7x", 1)


def test_importing_the_plugin_does_not_import_redis() -> None:
    # 13.6/56 in SPEC terms: the client library is imported when the backend is built.
    code = (
        "import sys, qmtl_state_redis.plugin, qmtl_state_redis; "
        "assert 'redis' not in sys.modules, 'redis imported at plugin import'; "
        "from qmtl.plugins import load_plugins; "
        "assert 'redis' in load_plugins().states.kinds(); "
        "assert 'redis' not in sys.modules, 'redis imported at registration'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
