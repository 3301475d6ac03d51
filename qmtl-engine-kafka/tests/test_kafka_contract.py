"""The engine contract (qmtl.testing) on the Kafka engine, against a real broker and Redis.

Every library case runs through topics and consumer groups with Redis state; outputs, final
history and per-node counts must equal the local engine's (the oracle). Each run gets a fresh run
id, so cases that reuse a pipeline name (re-runs, the arrival-order property) never see each
other's messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qmtl.testing.engine_contract import EngineContract

pytestmark = pytest.mark.integration


class TestKafkaEngineContract(EngineContract):
    max_examples = 3  # each example is a full Kafka run (about a second)

    @pytest.fixture
    def contract_engine(self, kafka_bootstrap: str) -> Iterator[Any]:
        from qmtl_engine_kafka.engine import KafkaEngine

        engine = KafkaEngine(
            bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, run_timeout_s=90
        )
        yield engine
        engine.close()

    @pytest.fixture
    def contract_state(self, redis_url: str) -> Iterator[Any]:
        from qmtl_state_redis import RedisStateBackend

        state = RedisStateBackend(url=redis_url)
        yield state
        state.close()
