"""Values on a real broker (SPEC §5.4, §6 Messages): a value over the engine's message limit is a
ValueEncodeError naming the node and the setting (it was a raw KafkaException naming nothing),
and pending state holding any value survives a worker's save and load."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from qmtl import codec
from qmtl.errors import ValueEncodeError
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.streaming import NodeAligner, SourceBucketer
from qmtl.testing.pipelines import BASE
from qmtl.testing.values import same

MINUTE = {"1m": {"interval": "1m", "period": 10}}


@pytest.fixture
def small_engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap,
        connect_timeout_s=10,
        run_timeout_s=60,
        max_message_bytes=4096,
    )
    yield engine
    engine.close()


def _growing(name: str) -> Pipeline:
    """``blob`` returns 100 bytes for counters 0 and 1, then 10,000 bytes."""
    p = Pipeline(name)
    p.add_node(
        SourceNode(
            "counter", source=[(BASE + 60 * i + 1, i) for i in range(4)], interval_settings=MINUTE
        )
    )
    p.add_node(
        Node(
            "blob",
            fn=lambda counter: "x" * (100 if counter < 2 else 10_000),
            upstreams=["counter"],
            interval_settings=MINUTE,
        )
    )
    return p


@pytest.mark.integration
def test_a_value_over_the_message_limit_names_the_node_and_the_setting(
    small_engine: Any, unique: str
) -> None:
    pipeline = _growing(f"big-{unique}")
    state = MemoryStateBackend()
    with pytest.raises(ValueEncodeError) as caught:
        pipeline.run(engine=small_engine, state=state)
    message = str(caught.value)
    assert caught.value.node == "blob" and caught.value.interval == "1m"
    assert "Node 'blob' returned a value at interval 1m" in message
    assert "over the Kafka engine's limit of 4,096" in message
    assert "max_message_bytes (QMTL_KAFKA__MAX_MESSAGE_BYTES)" in message
    # the two small buckets before it are stored; the large one is not
    assert [len(v) for v in pipeline.get_interval_data("blob", "1m", state=state)] == [100, 100]


@pytest.mark.integration
def test_a_source_value_over_the_limit_names_the_source(small_engine: Any, unique: str) -> None:
    pipeline = Pipeline(f"big-source-{unique}")
    pipeline.add_node(
        SourceNode("feed", source=[(BASE + 1, "y" * 10_000)], interval_settings=MINUTE)
    )
    with pytest.raises(ValueEncodeError, match=r"Node 'feed' .*max_message_bytes"):
        pipeline.run(engine=small_engine, state=MemoryStateBackend())


def test_pending_state_holding_any_value_survives_the_codec() -> None:
    # What a worker saves between batches (SourceBucketer / NodeAligner data), values included.
    values = [
        datetime(2024, 1, 5, 9, tzinfo=UTC),
        {"px": math.nan},
        (1, 2),
        np.array([1.5, 2.5]),
    ]
    bucketer = SourceBucketer([60], allowed_lateness=1000)  # every bucket stays open
    for i, value in enumerate(values):
        bucketer.on_event(BASE + 60 * i + 1, value)
    again = SourceBucketer.from_dict(codec.decode(codec.encode(bucketer.to_dict())))
    [(_k, buckets, _through)] = again.flush()
    assert len(buckets) == 4
    assert all(same(got, want) for (_b, got), want in zip(buckets, values, strict=True))

    first = BASE // 60
    aligner = NodeAligner(2, 60)
    aligner.on_bucket(1, first, "z")  # upstream 1 has a value from the first bucket on
    for i, value in enumerate(values):
        aligner.on_bucket(0, first + i, value)  # buckets 1..3 wait for upstream 1
    resumed = NodeAligner.from_dict(codec.decode(codec.encode(aligner.to_dict())))
    ready = resumed.on_end(1)
    assert ready is not None and [b for b, _args in ready] == [first + 1, first + 2, first + 3]
    for (_b, args), want in zip(ready, values[1:], strict=True):
        assert same(args[0], want) and args[1] == "z"
