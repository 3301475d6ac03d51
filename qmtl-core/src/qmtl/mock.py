"""The mock engine, for users' unit tests: chosen nodes' outputs replaced, every call recorded."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from qmtl.deadline import run_with_deadline
from qmtl.engine import EngineBase, execute_plan
from qmtl.errors import UnknownNodeError

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, PlanNode
    from qmtl.state import StateBackend
    from qmtl.streaming import OutputEvent, RunSummary


class MockEngineSettings(BaseModel):
    """Options of the ``mock`` engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mocks: dict[str, Any] = Field(
        default_factory=dict, description="Node name → value that replaces the node's output"
    )
    check_values: bool = Field(
        default=True,
        description=(
            "Check every output (mocked ones included) with qmtl.codec, as the local engine "
            "does; false skips it"
        ),
    )


class MockExecutionEngine(EngineBase):
    """Runs a pipeline in process with ``mocks`` replacing nodes' outputs.

    A mock value that is callable is called with the node's upstream values instead of the
    node's function. ``calls[name]`` lists the inputs (``{upstream: value}``) of each call of
    each node, mocked or not. A mock naming a node the pipeline does not have is an
    :class:`~qmtl.errors.UnknownNodeError` when the pipeline runs (a typo would otherwise let
    the real node run). Outputs, mocked ones included, are checked with
    :func:`qmtl.codec.check` as on the local engine (``check_values=False`` skips it), so a mock
    cannot hide a value a deployment would refuse.
    """

    name = "mock"

    def __init__(
        self,
        mocks: Mapping[str, Any] | MockEngineSettings | None = None,
        *,
        check_values: bool = True,
    ) -> None:
        if isinstance(mocks, MockEngineSettings):
            check_values = mocks.check_values
            mocks = mocks.mocks
        self.mocks: dict[str, Any] = dict(mocks or {})
        self.check_values = check_values
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def _invoke(self, node: PlanNode, values: Sequence[Any]) -> Any:
        self.calls.setdefault(node.name, []).append(dict(zip(node.upstreams, values, strict=True)))
        if node.name not in self.mocks:
            return node.invoke(values)
        mock = self.mocks[node.name]
        return mock(*values) if callable(mock) else mock

    def execute(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        inputs: Mapping[str, Any] | None = None,
        ts: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self.check_mocks(plan)
        checking = self.check_values
        if timeout is None:
            return execute_plan(
                plan, state, inputs=inputs, ts=ts, invoke_hook=self._invoke, check_values=checking
            )
        return run_with_deadline(
            plan.pipeline,
            timeout,
            lambda deadline: execute_plan(
                plan,
                deadline.state(state),
                inputs=inputs,
                ts=ts,
                invoke_hook=self._invoke,
                on_node=deadline.on_node,
                check_values=checking,
            ),
        )

    def check_mocks(self, plan: ExecutionPlan) -> None:
        """Refuse mocks of nodes ``plan`` does not have, suggesting the closest name."""
        for name in self.mocks:
            if name in plan.by_name:
                continue
            close = difflib.get_close_matches(name, list(plan.by_name), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UnknownNodeError(
                f"MockExecutionEngine mocks node '{name}', which pipeline '{plan.pipeline}' does "
                f"not have; {hint}its nodes are {sorted(plan.by_name)}"
            )

    def run(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        on_output: Callable[[OutputEvent], None] | None = None,
        sources: Mapping[str, Any] | None = None,
        events: Iterable[tuple[str, Any, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float | None = None,
        batch: int | None = None,
        check_values: bool | None = None,
    ) -> RunSummary:
        """Stream the sources to their end as the local engine does, with mocks applied.

        A mocked processing node's value (or ``mock(*inputs)``) replaces each bucket it
        computes; a mocked source keeps its events' times and replaces each value with the mock
        (a callable mock is called with no arguments per event). ``calls`` records the inputs of
        every bucket computation. ``check_values`` (default: the engine's) checks every value
        with :func:`qmtl.codec.check`.
        """
        from qmtl.sources import source_events
        from qmtl.stream_runner import run_in_process

        self.check_mocks(plan)
        mocked = {
            n.name: self.mocks[n.name]
            for n in plan.nodes
            if not n.upstreams and n.name in self.mocks
        }
        sources = dict(sources or {})
        if events is not None:
            events = [
                (name, ts, _value_of(mocked[name]) if name in mocked else value)
                for name, ts, value in events
            ]
        else:
            for name in mocked:
                node = plan.node(name).node
                raw = sources.get(name, getattr(node, "source", getattr(node, "fn", None)))
                replaced = ((ts, _value_of(mocked[name])) for ts, _v in source_events(raw, name))
                # bounded data stays a list (batched like the local engine); a feed stays lazy
                bounded = isinstance(raw, list | tuple) or getattr(raw, "bounded", False)
                sources[name] = list(replaced) if bounded else replaced
        return run_in_process(
            plan,
            state,
            on_output=on_output,
            sources=sources,
            events=events,
            clock=clock,
            invoke_hook=self._invoke,
            engine=self.name,
            batch=batch,
            timeout=timeout,
            check_values=self.check_values if check_values is None else check_values,
        )


def _value_of(mock: Any) -> Any:
    return mock() if callable(mock) else mock
