"""qmtl.testing's state-backend contract, run against the real Redis (memory runs it in core)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qmtl.testing.state_contract import StateBackendContract
from qmtl_state_redis import RedisStateBackend


@pytest.mark.integration
class TestRedisStateContract(StateBackendContract):
    ttl = 1  # seconds; Redis expires keys by wall clock, so advance() sleeps past it

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[RedisStateBackend]:
        backend = RedisStateBackend(url=redis_url)
        yield backend
        backend.close()
