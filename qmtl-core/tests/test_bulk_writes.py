"""Engines write buckets in bulk (qmtl.state.column_writer), and every backend still sees each
write the way it asked to: a subclass overriding ``write`` sees every bucket in order, and a
wrapper filtering ``write``/``write_many`` is never bypassed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qmtl import Node, Pipeline, SourceNode
from qmtl.state import BucketWrite, MemoryStateBackend, SeriesKey, StateBackend, column_writer

DAY = 86_400.0


class RecordingState(MemoryStateBackend):
    """The memory backend, remembering every write in order (as a user's subclass would)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, float, Any]] = []
        self.names: dict[str, str] = {}

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        self.writes.append((self.names.get(key.node_id, key.node_id), timestamp, value))
        super().write(key, timestamp, value, **kwargs)


class DropOdd:
    """A wrapper that filters writes and forwards everything else (like the Analyzer's)."""

    def __init__(self, state: StateBackend) -> None:
        self._state = state

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        if value % 2 == 0:
            self._state.write(key, timestamp, value, **kwargs)

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        self._state.write_many(w for w in writes if w.value % 2 == 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def chain() -> Pipeline:
    pipeline = Pipeline("bulk", default_intervals={"1d": {"interval": "1d", "period": 3}})
    pipeline.add_node(SourceNode("a", source=[(0, 1), (DAY, 2)]))
    pipeline.add_node(Node("b", fn=lambda a: a * 10, upstreams=["a"]))
    pipeline.add_node(Node("c", fn=lambda b: b + 1, upstreams=["b"]))
    return pipeline


def test_a_subclass_overriding_write_sees_every_one_shot_write_in_plan_order() -> None:
    pipeline, state = chain(), RecordingState()
    state.names = {n.node_id: n.name for n in pipeline.build().nodes}
    pipeline.execute(ts=0, state=state)
    pipeline.execute(ts=DAY, state=state)
    assert state.writes == [
        ("a", DAY, 2),  # a one-shot source is the last item of its list
        ("b", DAY, 20),
        ("c", DAY, 21),
        ("a", 2 * DAY, 2),
        ("b", 2 * DAY, 20),
        ("c", 2 * DAY, 21),
    ]


def test_a_subclass_overriding_write_sees_every_streamed_bucket() -> None:
    pipeline, state = chain(), RecordingState()
    state.names = {n.node_id: n.name for n in pipeline.build().nodes}
    pipeline.run(state=state)
    assert sorted(state.writes) == [
        ("a", DAY, 1),
        ("a", 2 * DAY, 2),
        ("b", DAY, 10),
        ("b", 2 * DAY, 20),
        ("c", DAY, 11),
        ("c", 2 * DAY, 21),
    ]
    assert [w[0] for w in state.writes if w[1] == DAY][:1] == ["a"]  # upstream before reader


def test_a_filtering_wrapper_is_not_bypassed() -> None:
    inner = MemoryStateBackend()
    key = SeriesKey("p", "n", "1d")
    column_writer(DropOdd(inner))(
        [key] * 4, [DAY, 2 * DAY, 3 * DAY, 4 * DAY], [1, 2, 3, 4], [10] * 4, [None] * 4
    )
    assert [item["value"] for item in inner.read(key)] == [4, 2]

    pipeline = chain()
    pipeline.execute(ts=0, state=DropOdd(inner))  # a = 2, b = 20, c = 21 (odd: dropped)
    assert pipeline.get_interval_data("b", state=inner) == [20]
    assert pipeline.get_interval_data("c", state=inner) == []
