"""Streaming semantics (SPEC §5.2), checked against values computed by hand."""

from __future__ import annotations

import json

import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import NodeExecutionError
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import StreamRunner, drive, run_in_process
from qmtl.streaming import END, NodeAligner, OutputEvent, SourceBucketer

H = 3600
HOURLY = {"1h": {"interval": "1h", "period": 24}}

# Two sources, each in its own time order; across sources they arrive out of order
# (eth's 7300 arrives before btc's 100, btc's 3700 after eth's 7400, ...).
BTC = [(100, 10.0), (3000, 11.0), (3700, 12.0), (4000, 13.0), (11000, 15.0)]
ETH = [(200, 100.0), (7300, 102.0), (7400, 103.0), (10900, 104.0), (14500, 105.0)]
ARRIVAL = [
    ("eth", 200, 100.0),
    ("eth", 7300, 102.0),
    ("btc", 100, 10.0),
    ("btc", 3000, 11.0),
    ("eth", 7400, 103.0),
    ("btc", 3700, 12.0),
    ("btc", 2000, 999.0),  # late: hour 0 is final
    ("eth", 10900, 104.0),
    ("btc", 4000, 13.0),
    ("eth", 14500, 105.0),
    ("btc", 11000, 15.0),
]


def hand_pipeline() -> Pipeline:
    p = Pipeline("hand")
    p.add_node(SourceNode("btc", source=BTC, interval_settings=HOURLY))
    p.add_node(SourceNode("eth", source=ETH, interval_settings=HOURLY))
    p.add_node(
        Node(
            "spread",
            fn=lambda btc, eth: eth - btc,
            upstreams=["btc", "eth"],
            interval_settings=HOURLY,
        )
    )
    p.add_node(
        Node(
            "spread3",
            fn=lambda spread: sum(spread),
            upstreams=["spread"],
            window=3,
            interval_settings=HOURLY,
        )
    )
    p.add_node(
        Node("btc3", fn=lambda btc: btc, upstreams=["btc"], window=3, interval_settings=HOURLY)
    )
    return p


def by_node(events: list[OutputEvent]) -> dict[str, list[tuple[float, object]]]:
    result: dict[str, list[tuple[float, object]]] = {}
    for e in events:
        result.setdefault(e.node, []).append((e.ts, e.value))
    return result


# Computed by hand. Hour buckets (end ts): btc 0:11 (last of 10, 11), 1:13, 3:15 (no hour 2);
# eth 0:100, 2:103 (last of 102, 103), 3:104, 4:105 (no hour 1).
EXPECTED = {
    "btc": [(H, 11.0), (2 * H, 13.0), (4 * H, 15.0)],
    "eth": [(H, 100.0), (3 * H, 103.0), (4 * H, 104.0), (5 * H, 105.0)],
    # as-of join: hour 1 uses eth's hour-0 price, hours 2 and 4 use btc's last price
    "spread": [(H, 89.0), (2 * H, 87.0), (3 * H, 90.0), (4 * H, 89.0), (5 * H, 90.0)],
    # window of 3 spreads: 89+87+90, 87+90+89, 90+89+90 (warm-up: nothing before hour 2)
    "spread3": [(3 * H, 266.0), (4 * H, 266.0), (5 * H, 269.0)],
    # btc's own buckets, not forward-filled: full only at hour 3; hour 4 has no btc value
    "btc3": [(4 * H, [11.0, 13.0, 15.0])],
}


def test_hand_checked_join_and_window_with_out_of_order_arrival() -> None:
    events: list[OutputEvent] = []
    summary = hand_pipeline().run(
        events.append, engine="local", state=MemoryStateBackend(), events=ARRIVAL
    )
    assert by_node(events) == EXPECTED
    assert summary.late_events == 1
    assert summary.nodes["btc"].late_events == 1
    assert summary.nodes["btc"].events_in == 6
    assert summary.events_in == 11
    assert summary.buckets_out == sum(len(v) for v in EXPECTED.values())
    assert all(e.interval == "1h" for e in events)


def test_sources_merged_by_event_time_give_the_same_bars() -> None:
    events: list[OutputEvent] = []
    summary = hand_pipeline().run(events.append, engine="local", state=MemoryStateBackend())
    assert by_node(events) == EXPECTED
    assert summary.late_events == 0


def test_history_holds_every_final_bucket_and_rerun_changes_nothing() -> None:
    state = MemoryStateBackend()
    pipeline = hand_pipeline()
    pipeline.run(engine="local", state=state, events=ARRIVAL)
    first = {n: pipeline.get_history(n, "1h", count=None) for n in EXPECTED}
    assert [(i["timestamp"], i["value"]) for i in reversed(first["spread"])] == EXPECTED["spread"]
    again = hand_pipeline()
    again.run(engine="local", state=state, events=ARRIVAL)
    assert {n: again.get_history(n, "1h", count=None) for n in EXPECTED} == first
    assert again.get_node_metadata("spread", "1h")["count"] == 5


def closed(closures: list | None) -> list | None:
    """The buckets a bucketer call closed (watermark-only advances left out)."""
    return None if closures is None else [(i, b) for i, b, _ in closures if b]


def test_last_event_by_time_wins_and_ties_go_to_the_later_arrival() -> None:
    bucketer = SourceBucketer([60])
    assert closed(bucketer.on_event(10, "a")) == []
    assert closed(bucketer.on_event(5, "older")) == []  # same bucket, earlier ts: not the last
    assert closed(bucketer.on_event(10, "tie")) == []
    assert bucketer.on_event(61, "next") == [(0, [(0, "tie")], 0)]
    assert bucketer.on_event(30, "late") is None
    assert (bucketer.events, bucketer.late) == (4 + 1, 1)
    assert bucketer.flush() == [(0, [(1, "next")], END)]


def test_allowed_lateness_keeps_buckets_open_then_drops_later_events() -> None:
    bucketer = SourceBucketer([60], allowed_lateness=30)
    bucketer.on_event(0, 1)
    assert closed(bucketer.on_event(70, 2)) == []  # watermark 70 - 30 = 40: minute 0 is open
    assert closed(bucketer.on_event(50, 3)) == []  # accepted, the last of minute 0 by ts
    assert bucketer.on_event(95, 4) == [(0, [(0, 3)], 0)]
    assert bucketer.on_event(55, 5) is None
    assert bucketer.late == 1


def test_an_event_enters_every_interval_or_none() -> None:
    bucketer = SourceBucketer([60, 3600])
    bucketer.on_event(10, "a")
    bucketer.on_event(70, "b")
    assert bucketer.on_event(20, "late") is None  # minute 0 is final, so hour 0 ignores it too
    assert bucketer.flush() == [(0, [(1, "b")], END), (1, [(0, "b")], END)]


def test_aligner_waits_for_the_slowest_upstream_then_joins_as_of() -> None:
    aligner = NodeAligner(2, seconds=60)
    assert aligner.on_bucket(0, 0, "a0") is None  # upstream 1 has said nothing yet
    assert aligner.on_bucket(0, 1, "a1") is None
    assert aligner.on_watermark(1, 60) == []  # bucket 0 final for both, but 1 has no value yet
    assert aligner.on_bucket(1, 1, "b1") == [(1, ["a1", "b1"])]
    assert aligner.on_bucket(1, 2, "b2") is None  # upstream 0 is final only through 1
    assert aligner.on_end(0) == [(2, ["a1", "b2"])]
    assert aligner.watermark == 180
    assert aligner.on_bucket(1, 2, "replayed") is None  # a replay changes nothing


def test_state_survives_json_between_batches() -> None:
    """A distributed engine persists the state between batches: stopping and restoring it
    anywhere gives the same buckets as one uninterrupted run."""
    feed = [(0, 0), (1, 1), (0, 1), (0, 2), (1, 2), (0, 3), (1, 4), (0, 5), (1, 5)]
    plain = NodeAligner(2, seconds=60, window=2)
    expected = [r for u, b in feed if (r := plain.on_bucket(u, b, b * 10 + u))]
    resumed = NodeAligner(2, seconds=60, window=2)
    got = []
    for u, b in feed:
        resumed = NodeAligner.from_dict(json.loads(json.dumps(resumed.to_dict())))
        ready = resumed.on_bucket(u, b, b * 10 + u)
        if ready:
            got.append(ready)
    assert got == expected
    assert expected  # the feed does produce windows

    source = SourceBucketer([60, 3600], allowed_lateness=10)
    copy = SourceBucketer([60, 3600], allowed_lateness=10)
    for ts in [5, 50, 65, 40, 130, 3700, 3650, 3800]:
        copy = SourceBucketer.from_dict(json.loads(json.dumps(copy.to_dict())))
        assert copy.on_event(ts, ts) == source.on_event(ts, ts)
    assert copy.to_dict() == source.to_dict()


def test_state_is_bounded() -> None:
    aligner = NodeAligner(1, seconds=60, window=3)
    for b in range(1000):
        aligner.on_bucket(0, b, float(b))
    data = aligner.to_dict()
    assert data["pending"] == []
    assert data["windows"] == [[997.0, 998.0, 999.0]]
    bucketer = SourceBucketer([60, 3600])
    for ts in range(0, 100_000, 7):
        bucketer.on_event(ts, ts)
    assert all(len(o) <= 1 for o in bucketer.open)


def test_two_intervals_are_separate_series() -> None:
    both = {"1m": {"interval": "1m", "period": 10}, "1h": {"interval": "1h", "period": 2}}
    p = Pipeline("two-intervals")
    p.add_node(
        SourceNode("px", source=[(i * 30, float(i)) for i in range(250)], interval_settings=both)
    )
    p.add_node(Node("x2", fn=lambda px: px * 2, upstreams=["px"], interval_settings=both))
    events: list[OutputEvent] = []
    p.run(events.append, engine="local", state="memory")
    hourly = [(e.ts, e.value) for e in events if e.node == "x2" and e.interval == "1h"]
    assert hourly == [(3600.0, 238.0), (7200.0, 478.0), (10800.0, 498.0)]
    minutes = [e for e in events if e.node == "x2" and e.interval == "1m"]
    assert len(minutes) == 125 and minutes[0].value == 2.0
    assert p.get_interval_data("x2", "1h", count=None) == [498.0, 478.0, 238.0]
    assert p.get_node_metadata("x2", "1h")["ttl"] == 2 * 3600


def test_a_failing_node_is_named_and_earlier_buckets_stay() -> None:
    def boom(px: float) -> float:
        if px >= 3:
            raise ZeroDivisionError("bad tick")
        return px

    p = Pipeline("failing", default_intervals={"1m": {"interval": "1m", "period": 5}})
    p.add_node(SourceNode("px", source=[(i * 60, float(i)) for i in range(10)]))
    p.add_node(Node("boom", fn=boom, upstreams=["px"]))
    state = MemoryStateBackend()
    with pytest.raises(NodeExecutionError, match=r"'boom'.*ZeroDivisionError: bad tick") as caught:
        p.run(engine="local", state=state)
    assert caught.value.node == "boom"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert p.get_interval_data("boom", "1m", count=None, state=state) == [2.0, 1.0, 0.0]


def test_query_nodes_stream_like_any_node() -> None:
    from qmtl import QueryNode

    minute = {"1m": {"interval": "1m", "period": 5}}
    p = Pipeline("q")
    p.add_node(
        SourceNode("a", source=[(10, 1.0), (70, 2.0)], tags=["px"], interval_settings=minute)
    )
    p.add_node(SourceNode("b", source=[(20, 5.0)], tags=["px"], interval_settings=minute))
    p.add_query_node(QueryNode("all_px", tags=["px"]))
    p.add_node(
        Node(
            "total",
            fn=lambda all_px: sum(all_px.values()),
            upstreams=["all_px"],
            interval_settings=minute,
        )
    )
    events: list[OutputEvent] = []
    p.run(events.append, engine="local", state="memory")
    got = by_node(events)
    assert got["all_px"] == [(60.0, {"a": 1.0, "b": 5.0}), (120.0, {"a": 2.0, "b": 5.0})]
    assert got["total"] == [(60.0, 6.0), (120.0, 7.0)]


def test_runner_is_deep_dag_safe() -> None:
    p = Pipeline("deep", default_intervals={"1m": {"interval": "1m", "period": 1}})
    p.add_node(SourceNode("n0", source=[(0, 0), (60, 0)]))
    for i in range(1, 1500):
        p.add_node(Node(f"n{i}", fn=lambda x: x + 1, upstreams=[f"n{i - 1}"]))
    state = MemoryStateBackend()
    summary = drive(StreamRunner(p.build(), state), iter([(0, 0, 0), (0, 60, 5), (0, None, None)]))
    assert summary.nodes["n1499"].buckets_out == {"1m": 2}
    assert p.get_interval_data("n1499", "1m", count=1, state=state) == [1504]


def test_run_in_process_is_what_the_local_engine_runs() -> None:
    state_a, state_b = MemoryStateBackend(), MemoryStateBackend()
    a: list[OutputEvent] = []
    b: list[OutputEvent] = []
    run_in_process(hand_pipeline().build(), state_a, on_output=a.append)
    hand_pipeline().run(b.append, engine="local", state=state_b)
    assert a == b


@pytest.mark.parametrize("batch", [1, 2, 7, 256])
def test_batching_never_changes_a_series(batch: int) -> None:
    from qmtl.testing.engine_contract import collect
    from qmtl.testing.pipelines import multi_source_join

    reference: list[OutputEvent] = []
    run_in_process(
        multi_source_join().build(), MemoryStateBackend(), on_output=reference.append, batch=1
    )
    got: list[OutputEvent] = []
    run_in_process(
        multi_source_join().build(), MemoryStateBackend(), on_output=got.append, batch=batch
    )
    assert collect(got) == collect(reference)


def test_upstream_values_bind_by_name_whatever_the_parameter_order() -> None:
    minute = {"1m": {"interval": "1m", "period": 2}}
    p = Pipeline("binding", default_intervals=minute)
    p.add_node(SourceNode("a", source=[(0, 1.0)]))
    p.add_node(SourceNode("b", source=[(0, 10.0)]))
    p.add_node(Node("ab", fn=lambda a, b: b - a, upstreams=["a", "b"]))
    p.add_node(Node("ba", fn=lambda a, b: b - a, upstreams=["b", "a"]))
    p.add_node(
        Node("scaled", fn=lambda a, b, scale: (b - a) * scale, upstreams=["a", "b"], scale=2)
    )
    p.add_node(Node("kw", fn=lambda **kw: sorted(kw.items()), upstreams=["b", "a"]))
    p.add_node(Node("pos", fn=lambda x, y: [x, y], upstreams=["b", "a"]))
    events: list[OutputEvent] = []
    p.run(events.append, engine="local", state="memory")
    got = {e.node: e.value for e in events}
    assert got["ab"] == got["ba"] == 9.0
    assert got["scaled"] == 18.0
    assert got["kw"] == [("a", 1.0), ("b", 10.0)]
    assert got["pos"] == [10.0, 1.0]


def test_the_contracts_reference_evaluator_agrees_with_the_hand_computed_values() -> None:
    """qmtl.testing.reference (the independent evaluator the engine contract anchors its
    oracle to) gives the values computed by hand above, late event included."""
    from qmtl.testing.reference import evaluate

    found = evaluate(hand_pipeline(), events=ARRIVAL)
    assert {node: found.outputs[(node, "1h")] for node in EXPECTED} == EXPECTED
    assert found.counts["btc"] == {"events_in": 6, "late_events": 1, "buckets_out": {"1h": 3}}
    assert found.counts["spread3"]["buckets_out"] == {"1h": 3}
    assert found.history[("spread", "1h")] == list(reversed(EXPECTED["spread"]))
