"""Fixtures of the qmtl-state-redis tests: a backend on the session's Redis, raw access to
that Redis, and private redis-server processes for tests that restart or reconfigure one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from qmtl_state_redis import RedisStateBackend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline_name() -> str:
    """A pipeline name no other test uses, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test Redis, for looking behind the backend's back."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def backend(redis_url: str, pipeline_name: str) -> Iterator[RedisStateBackend]:
    store = RedisStateBackend(redis_url)
    yield store
    store.delete(pipeline_name)
    store.close()


def _load_redis_launcher() -> ModuleType:
    path = REPO / "scripts" / "_redis.py"
    spec = importlib.util.spec_from_file_location("qmtl_scripts_redis", path)
    assert spec is not None and spec.loader is not None, f"{path} is missing"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def launcher() -> ModuleType:
    """``scripts/_redis.py``; tests needing their own redis-server skip without the binary
    (and fail under CI=true, where it must be installed)."""
    if not (os.environ.get("QMTL_REDIS_SERVER") or shutil.which("redis-server")):
        reason = "redis-server binary not found (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return _load_redis_launcher()


@pytest.fixture
def own_redis(launcher: ModuleType, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start private redis-servers: ``own_redis("--requirepass", "x")``; all stopped after."""
    servers: list[Any] = []

    def start(*extra_args: str, port: int | None = None) -> Any:
        server = launcher.RedisServer(tmp_path / f"redis{len(servers)}", port, extra_args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
