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


def test_the_oracle_is_anchored_to_the_independent_evaluator(monkeypatch) -> None:
    """The contract's oracle runs the local engine's own code; it is checked against
    qmtl.testing.reference, so a bug in that code fails the local and mock engines' contract
    instead of being compared with itself. Here the streaming core is broken on purpose (it
    loses a source's last bucket) and the oracle refuses it."""
    from qmtl.streaming import SourceBucketer
    from qmtl.testing import engine_contract

    real_flush = SourceBucketer.flush

    def lossy_flush(self: SourceBucketer) -> list:
        return [(i, buckets[:-1], through) for i, buckets, through in real_flush(self)]

    monkeypatch.setattr(SourceBucketer, "flush", lossy_flush)
    monkeypatch.setattr(engine_contract, "_ORACLES", {})
    with pytest.raises(AssertionError, match="differ from the independent evaluator"):
        engine_contract.oracle("chain")
