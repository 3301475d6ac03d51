"""Calendars and event times on a real broker: the same buckets as the local engine.

The library case ``calendars`` (a time zone's session close across both clock changes) runs in
the engine contract; this test adds a duration offset (``"-8h"``: weeks from Sunday 16:00 UTC,
an origin that is not an epoch multiple), event times given as numpy ints, ISO strings and
datetimes, and one-shot runs, each checked against hand-computed bucket ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import collect

pytestmark = pytest.mark.integration

HOUR, DAY, WEEK = 3600, 86_400, 604_800
FRI_1600 = 1_709_913_600  # 2024-03-08T16:00Z
SAT_1600 = 1_710_000_000  # 2024-03-09T16:00Z
SUN_1600 = 1_710_086_400  # 2024-03-10T16:00Z
MON_1600 = 1_710_172_800  # 2024-03-11T16:00Z
INTERVALS = {
    "1h": {"interval": "1h", "period": 24},
    "1d": {"interval": "1d", "period": 7},
    "1w": {"interval": "1w", "period": 4},
}


def closes(name: str) -> Pipeline:
    p = Pipeline(name, default_intervals=INTERVALS, bucket_offset="-8h")
    events = [
        (np.int64(FRI_1600 - 60), 1.0),  # Fri 15:59Z: the day ending Fri 16:00Z
        ("2024-03-08T16:00:00Z", 2.0),  # a bucket start: the day ending Sat 16:00Z
        (datetime(2024, 3, 10, 15, tzinfo=UTC), 3.0),  # Sun 15:00Z: ending Sun 16:00Z
        [np.float64(SUN_1600 + HOUR), 4.0],  # Sun 17:00Z: ending Mon 16:00Z, the next week
        (MON_1600 + HOUR, 5.0),  # Mon 17:00Z: ending Tue 16:00Z
    ]
    p.add_node(SourceNode("px", source=events))
    p.add_node(Node("x10", fn=lambda px: px * 10, upstreams=["px"]))
    return p


@pytest.fixture
def engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, run_timeout_s=90)
    yield engine
    engine.close()


def test_offset_days_and_sunday_weeks_match_the_local_engine_and_the_hand_computed_ends(
    engine: Any, redis_url: str, unique: str
) -> None:
    from qmtl_state_redis import RedisStateBackend

    pipeline = closes(f"calendars-{unique}")
    state = RedisStateBackend(url=redis_url)
    events: list[Any] = []
    pipeline.run(events.append, engine=engine, state=state)
    local: list[Any] = []
    closes(f"calendars-{unique}").run(local.append, engine="local", state=MemoryStateBackend())
    got = collect(events)
    assert got == collect(local)
    assert got[("px", "1d")] == [
        (FRI_1600, 1.0),
        (SAT_1600, 2.0),
        (SUN_1600, 3.0),
        (MON_1600, 4.0),
        (MON_1600 + DAY, 5.0),
    ]
    # weeks from Sunday 16:00Z: Fri, Sat and Sun 15:00Z end at Sun 10 March 16:00Z
    assert got[("x10", "1w")] == [(SUN_1600, 30.0), (SUN_1600 + WEEK, 50.0)]
    history = pipeline.get_history("x10", "1w", state=state)
    assert [item["timestamp"] for item in history] == [SUN_1600 + WEEK, SUN_1600]
    # the one-shot form over Kafka stores a Sunday-afternoon run in the week ending that day
    once = Pipeline(f"calendars-once-{unique}", default_intervals=INTERVALS, bucket_offset="-8h")
    once.add_node(SourceNode("px", source=lambda: 7.0))
    once.execute(ts=SUN_1600 - HOUR, engine=engine, state=state)
    assert once.get_history("px", "1w", state=state)[0]["timestamp"] == SUN_1600
    assert once.get_history("px", "1d", state=state)[0]["timestamp"] == SUN_1600
    for name in (pipeline.name, once.name):
        state.delete(name)
    state.close()
