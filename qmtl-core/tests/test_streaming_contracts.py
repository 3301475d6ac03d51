"""The mock engine and the memory state pass the contract suites every engine/backend must pass."""

from __future__ import annotations

import pytest

from qmtl.mock import MockExecutionEngine
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import EngineContract
from qmtl.testing.state_contract import FakeClock, StateBackendContract


class TestMockEngineContract(EngineContract):
    engine = MockExecutionEngine
    max_examples = 10


class TestMemoryStateContract(StateBackendContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def backend(self, clock: FakeClock) -> MemoryStateBackend:
        return MemoryStateBackend(clock=clock)

    @pytest.fixture
    def advance(self, clock: FakeClock):  # type: ignore[no-untyped-def]
        return clock.advance
