"""The engine contract: every engine gives the local engine's streaming results (SPEC §5.2).

Subclass :class:`EngineContract` in a test module; pytest collects the inherited tests::

    from qmtl.testing.engine_contract import EngineContract

    class TestMyEngine(EngineContract):
        engine = "my-engine"            # a kind, an engine object, or a zero-argument factory
        state = "memory"                # the same forms; default: a fresh MemoryStateBackend

Or override the fixtures to use services (``redis_url`` / ``kafka_bootstrap`` come from
``qmtl.testing.services``)::

    class TestKafkaEngine(EngineContract):
        @pytest.fixture
        def contract_engine(self, kafka_bootstrap):
            engine = KafkaEngine(bootstrap_servers=kafka_bootstrap)
            yield engine
            engine.close()

        @pytest.fixture
        def contract_state(self, redis_url):
            return RedisStateBackend(url=redis_url)

Every test runs a library case (:mod:`qmtl.testing.pipelines`) with
``pipeline.run(on_output=..., engine=..., state=..., **run_options)`` and compares with the
oracle: the same case run by :func:`qmtl.stream_runner.run_in_process` (the local engine's code)
into a fresh :class:`~qmtl.state.MemoryStateBackend`, itself checked once per case against
:mod:`qmtl.testing.reference`, a brute-force evaluator of SPEC §5.2 that shares no code with
the streaming core (so the local and mock engines are not compared with themselves).
Compared: every series' outputs (in emission order, which must be bucket order), the final
history of every series, and the run summary's per-node counts. The arrival-order property
(hypothesis) feeds the sources' events interleaved at random with ``events=[(source, ts,
value), ...]``: an engine must accept that option and consume events in that order. The
contract deletes each case pipeline's data from the state backend before running it, so one
backend may serve all tests. ``cases`` restricts the cases (each test is generated only for the
cases it shares with ``cases``, so a restricted subclass shows no skipped tests);
``max_examples`` sizes the property test; ``run_options`` are extra options for ``run``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmtl.errors import (
    ConfigurationError,
    NodeExecutionError,
    PipelineTimeoutError,
    SourceExecutionError,
)
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend, StateBackend
from qmtl.stream_runner import run_in_process
from qmtl.streaming import OutputEvent
from qmtl.testing import reference
from qmtl.testing.pipelines import (
    BASE,
    CASES,
    FAIL_AT,
    SLOW_S,
    Case,
    broken_feed,
    events_of,
    slow,
)
from qmtl.testing.value_contract import VALUE_CASES, ValueCase, ValueContract

Outputs = dict[tuple[str, str], list[tuple[float, Any]]]
PASSING = [name for name, case in CASES.items() if case.fails is None]
MULTI_SOURCE = ["multi_source_join", "windows", "query", "lateness", "diamond"]
RERUN = ["multi_source_join", "windows", "lateness"]

_Test = TypeVar("_Test", bound=Callable[..., None])


def over(*names: str) -> Callable[[_Test], _Test]:
    """Mark a contract test as run once per library case in ``names`` that the class enables."""

    def mark(test: _Test) -> _Test:
        marked: Any = test  # a function takes the attribute that pytest_generate_tests reads
        marked.contract_cases = names
        return test

    return mark


def collect(events: list[OutputEvent]) -> Outputs:
    """Outputs per ``(node, interval)`` series, in emission order."""
    series: Outputs = {}
    for event in events:
        series.setdefault((event.node, str(event.interval)), []).append(
            (float(event.ts), event.value)
        )
    return series


def history(pipeline: Pipeline, state: StateBackend) -> dict[tuple[str, str], list[Any]]:
    """Every series' full stored history, newest first."""
    result = {}
    for node in pipeline.build().nodes:
        for spec in node.series:
            result[(node.name, spec.interval.value)] = [
                (float(item["timestamp"]), item["value"]) for item in state.read(spec.key)
            ]
    return result


def counts(summary: Any) -> dict[str, Any]:
    """Per-node counts of a summary (what every engine must agree on)."""
    data = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    return {name: {k: v for k, v in node.items()} for name, node in data["nodes"].items()}


class Oracle:
    """The reference results of one case: the local engine's code on memory state."""

    def __init__(self, case: Case, **options: Any) -> None:
        pipeline = case.build()
        self.state = MemoryStateBackend()
        events: list[OutputEvent] = []
        self.summary = run_in_process(
            pipeline.build(), self.state, on_output=events.append, engine="oracle", **options
        )
        self.outputs = collect(events)
        self.history = history(pipeline, self.state)


_ORACLES: dict[str, Oracle] = {}


def oracle(name: str) -> Oracle:
    """The oracle of case ``name``, checked once against the independent brute-force
    evaluator (:mod:`qmtl.testing.reference`), so no engine, the local one included, is only
    ever compared with its own code."""
    if name not in _ORACLES:
        found = Oracle(CASES[name])
        expected = reference.evaluate(CASES[name].build())
        for what, ours, theirs in (
            ("outputs", found.outputs, expected.outputs),
            ("history", found.history, expected.history),
            ("counts", counts(found.summary), expected.counts),
        ):
            assert ours == theirs, (
                f"case {name!r}: the local engine's {what} differ from the independent "
                f"evaluator's (qmtl.testing.reference):\n{ours}\n!=\n{theirs}"
            )
        _ORACLES[name] = found
    return _ORACLES[name]


def _resolve(value: Any, state: bool = False) -> Any:
    if isinstance(value, str) and state:
        from qmtl.runtime import Resolver

        return Resolver().state(value, {})
    if isinstance(value, type) or (
        callable(value) and not hasattr(value, "run") and not hasattr(value, "write")
    ):
        return value()
    return value


class EngineContract(ValueContract):
    """Inherit and set ``engine`` (and ``state``), or override the two fixtures."""

    engine: Any = None
    state: Any = None
    cases: tuple[str, ...] = (*CASES, *VALUE_CASES)
    max_examples: int = 25
    run_options: dict[str, Any] = {}  # noqa: RUF012 — read-only, overridden by subclasses

    @pytest.fixture
    def contract_engine(self) -> Any:
        if self.engine is None:
            pytest.fail(f"{type(self).__name__}: set engine = ... or override contract_engine")
        return _resolve(self.engine)

    @pytest.fixture
    def contract_state(self) -> Iterator[Any]:
        state = MemoryStateBackend() if self.state is None else _resolve(self.state, state=True)
        yield state
        state.close()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        wanted = getattr(metafunc.function, "contract_cases", None)
        if wanted is not None:
            metafunc.parametrize("name", [name for name in wanted if name in self.cases])

    # -- helpers a subclass may override ---------------------------------------------------
    def build(self, case: Case | ValueCase) -> Pipeline:
        """A fresh pipeline of ``case`` (override to rename it, e.g. to use other topics)."""
        return case.build()

    def run_case(
        self, case: Case | ValueCase, engine: Any, state: Any, **options: Any
    ) -> tuple[Pipeline, Outputs, Any]:
        """Run ``case`` on the engine under test from a clean slate."""
        pipeline = self.build(case)
        _clean(pipeline, state)
        events: list[OutputEvent] = []
        summary = pipeline.run(
            events.append, engine=engine, state=state, **{**self.run_options, **options}
        )
        return pipeline, collect(events), summary

    # -- the contract ------------------------------------------------------------------------
    @over(*PASSING)
    def test_outputs_match_the_oracle(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        _pipeline, outputs, summary = self.run_case(CASES[name], contract_engine, contract_state)
        expected = oracle(name)
        assert sorted(outputs) == sorted(expected.outputs), "different series produced output"
        for series, items in expected.outputs.items():
            assert outputs[series] == items, f"outputs of {series} differ from the local engine"
        assert counts(summary) == counts(expected.summary)

    @over(*PASSING)
    def test_history_matches_the_oracle(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline, _outputs, _summary = self.run_case(CASES[name], contract_engine, contract_state)
        assert history(pipeline, contract_state) == oracle(name).history

    @over(*PASSING)
    def test_each_series_is_emitted_in_bucket_order(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        _pipeline, outputs, _summary = self.run_case(CASES[name], contract_engine, contract_state)
        assert outputs, "the case produced no output"
        for series, items in outputs.items():
            stamps = [ts for ts, _value in items]
            assert stamps == sorted(set(stamps)), f"{series} is not in strict bucket order"

    @over(*RERUN)
    def test_rerun_leaves_history_unchanged(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline, _outputs, _summary = self.run_case(CASES[name], contract_engine, contract_state)
        first = history(pipeline, contract_state)
        again = self.build(CASES[name])
        again.run(engine=contract_engine, state=contract_state, **self.run_options)
        assert history(again, contract_state) == first

    @over("failing")
    def test_failing_node_is_named_and_later_buckets_are_not_written(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        case = CASES[name]
        with pytest.raises(NodeExecutionError) as caught:
            self.run_case(case, contract_engine, contract_state)
        assert caught.value.node == case.fails
        assert "explode" in str(caught.value)
        written = history(self.build(case), contract_state)[(case.fails or "", "1m")]
        # Counter event i is (BASE + 60 i + 1, i): one per minute bucket, which ends at
        # BASE + 60 (i + 1). explode(i) = 10 i until i reaches FAIL_AT (7), where it raises. Its
        # buckets before the failing one stay (SPEC §5.2 failure policy), the failing one and
        # nothing after it is written: exactly buckets 0..6, newest first.
        assert written == [
            (float(BASE + 60 * (i + 1)), i * 10.0) for i in range(int(FAIL_AT) - 1, -1, -1)
        ]

    def test_an_unknown_run_option_is_refused_naming_it(
        self, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline = self.build(CASES["chain"])
        with pytest.raises(ConfigurationError) as caught:
            pipeline.run(
                engine=contract_engine, state=contract_state, **{**self.run_options, "timout": 5}
            )
        assert "'timout'" in str(caught.value) and "did you mean 'timeout'" in str(caught.value)

    def test_timeout_bounds_a_run(self, contract_engine: Any, contract_state: Any) -> None:
        """``timeout=`` is one of the options every engine takes: a run that outlasts it raises
        PipelineTimeoutError (its node sleeps SLOW_S per bucket, six buckets)."""
        pipeline = self.build(Case("slow", slow))
        _clean(pipeline, contract_state)
        with pytest.raises(PipelineTimeoutError) as caught:
            pipeline.run(
                engine=contract_engine,
                state=contract_state,
                **{**self.run_options, "timeout": SLOW_S},
            )
        assert caught.value.pipeline == pipeline.name and caught.value.timeout == SLOW_S

    def test_a_failing_source_is_named_with_its_error_chained(
        self, contract_engine: Any, contract_state: Any
    ) -> None:
        pipeline = self.build(Case("broken_feed", broken_feed))
        _clean(pipeline, contract_state)
        with pytest.raises(SourceExecutionError) as caught:
            pipeline.run(engine=contract_engine, state=contract_state, **self.run_options)
        assert caught.value.node == "feed" and "Source 'feed'" in str(caught.value)
        assert isinstance(caught.value.__cause__, ConnectionError)

    @over(*MULTI_SOURCE)
    def test_arrival_order_across_sources_never_changes_outputs(
        self, name: str, contract_engine: Any, contract_state: Any
    ) -> None:
        expected = oracle(name)
        per_source = events_of(self.build(CASES[name]))

        @settings(
            max_examples=self.max_examples,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(st.randoms(use_true_random=False))
        def check(rng: random.Random) -> None:
            arrival = interleave(per_source, rng)
            _p, outputs, summary = self.run_case(
                CASES[name], contract_engine, contract_state, events=arrival
            )
            assert outputs == expected.outputs
            assert counts(summary) == counts(expected.summary)

        check()


def interleave(
    per_source: dict[str, list[tuple[float, Any]]], rng: random.Random
) -> list[tuple[str, float, Any]]:
    """A random arrival order across sources that keeps each source's own order."""
    slots = [name for name, events in per_source.items() for _ in events]
    rng.shuffle(slots)
    positions = dict.fromkeys(per_source, 0)
    arrival = []
    for name in slots:
        ts, value = per_source[name][positions[name]]
        positions[name] += 1
        arrival.append((name, ts, value))
    return arrival


def _clean(pipeline: Pipeline, state: Any) -> None:
    state.delete(pipeline.name)


__all__ = ["EngineContract", "Oracle", "collect", "counts", "history", "interleave"]
