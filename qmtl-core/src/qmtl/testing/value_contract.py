"""The value part of the engine contract (SPEC §5.4), inherited by
:class:`~qmtl.testing.engine_contract.EngineContract`: every engine carries the listed value
types unchanged and refuses every other one with :class:`~qmtl.errors.ValueEncodeError` naming
the node, the interval and the type, streaming and one-shot. Expectations are written by hand in
:mod:`qmtl.testing.values`, not computed by the local engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from qmtl.errors import ValueEncodeError
from qmtl.pipeline import Pipeline
from qmtl.testing.pipelines import BASE, Case
from qmtl.testing.values import (
    ONESHOT_EXPECTED,
    VALUE_CASES,
    VALUE_PASSING,
    VALUE_REFUSED,
    ValueCase,
    expected,
    oneshot_refuse,
    oneshot_values,
    same,
)

_Test = TypeVar("_Test", bound=Callable[..., None])


def _over(*names: str) -> Callable[[_Test], _Test]:
    """Run a test once per value case in ``names`` that the class enables (see
    ``EngineContract.pytest_generate_tests``)."""

    def mark(test: _Test) -> _Test:
        marked: Any = test
        marked.contract_cases = names
        return test

    return mark


def _history(pipeline: Pipeline, state: Any) -> dict[tuple[str, str], list[tuple[float, Any]]]:
    """Every series' stored history, newest first."""
    return {
        (node.name, spec.interval.value): [
            (float(item["timestamp"]), item["value"]) for item in state.read(spec.key)
        ]
        for node in pipeline.build().nodes
        for spec in node.series
    }


class ValueContract:
    """Value tests; the subclass (EngineContract) provides the fixtures and ``run_case``."""

    def build(self, case: Case | ValueCase) -> Pipeline:
        raise NotImplementedError

    def run_case(
        self, case: Case | ValueCase, engine: Any, state: Any, **options: Any
    ) -> tuple[Pipeline, Any, Any]:
        raise NotImplementedError

    # -- values (SPEC §5.4): hand-written expectations, not the oracle -----------------------
    @_over(*VALUE_PASSING)
    def test_values_come_back_as_themselves(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        case = VALUE_CASES[name]
        pipeline, outputs, _summary = self.run_case(case, contract_engine, contract_state)
        want = expected(name)
        assert sorted(outputs) == sorted(want), "different series produced output"
        stored = _history(pipeline, contract_state)
        for series, items in want.items():
            for got, kind in ((outputs[series], "output"), (stored[series][::-1], "history")):
                assert len(got) == len(items), f"{kind} of {series}: {got!r}"
                for (ts, value), (wanted_ts, wanted) in zip(got, items, strict=True):
                    assert ts == wanted_ts and same(value, wanted), (
                        f"{kind} of {series} at {ts}: {value!r} ({type(value).__name__}), "
                        f"expected {wanted!r} ({type(wanted).__name__})"
                    )

    @_over(*VALUE_REFUSED)
    def test_refused_values_raise_value_encode_error_naming_node_interval_and_type(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        case = VALUE_CASES[name]
        with pytest.raises(ValueEncodeError) as caught:
            self.run_case(case, contract_engine, contract_state)
        error = caught.value
        assert (error.node, error.interval) == (case.fails, "1m")
        message = str(error)
        assert f"Node '{case.fails}'" in message and "at interval 1m" in message, message
        assert case.shows is not None and case.shows in message, message
        if case.fails == "refuse":  # its counters 0 and 1 pass; counter 2 is refused
            written = _history(self.build(case), contract_state)[("refuse", "1m")]
            assert written == [(BASE + 120.0, 1.0), (BASE + 60.0, 0.0)]

    def test_oneshot_values_come_back_as_themselves(
        self, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline = oneshot_values()
        contract_state.delete(pipeline.name)
        results = pipeline.execute(engine=contract_engine, state=contract_state, ts=BASE)
        for node, wanted in ONESHOT_EXPECTED.items():
            assert same(results[node], wanted), f"{node}: {results[node]!r}"
            stored = pipeline.get_history(node, "1m", state=contract_state)
            assert len(stored) == 1 and same(stored[0]["value"], wanted), f"{node}: {stored!r}"

    def test_oneshot_refused_value_names_node_interval_and_type(
        self, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline = oneshot_refuse()
        contract_state.delete(pipeline.name)
        with pytest.raises(ValueEncodeError) as caught:
            pipeline.execute(engine=contract_engine, state=contract_state, ts=BASE)
        assert (caught.value.node, caught.value.interval) == ("bad", "1m")
        assert "Node 'bad' returned a value at interval 1m" in str(caught.value)
        assert "value: set" in str(caught.value)
        stored = {
            n: pipeline.get_interval_data(n, "1m", state=contract_state) for n in pipeline.nodes
        }
        assert stored == {"price": [101.5], "bad": [], "after": []}


__all__ = ["VALUE_CASES", "ValueCase", "ValueContract"]
