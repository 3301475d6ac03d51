"""Pieces of the sharded Kafka engine that need no broker: the partition rule, the message
format (splitting, sizes, non-finite values), a shard's outputs and exports, the fenced
pending state of a partition, and the plugin's registrations."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pending import MemoryPendingStore
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl_engine_kafka import OversizedValueError, partition_for, run_topics
from qmtl_engine_kafka._layout import Layout, plan_hash
from qmtl_engine_kafka._partition import Partition
from qmtl_engine_kafka._send import _split_cross
from qmtl_engine_kafka._shard import Produced
from qmtl_engine_kafka._wire import fit, pack, unpack
from qmtl_engine_kafka.envelope import Envelope, decode, encode
from qmtl_engine_kafka.errors import (
    EnvelopeVersionError,
    MalformedEnvelopeError,
    UndecodableEnvelopeError,
)

MINUTE = {"1m": {"interval": "1m", "period": 10, "max_history": 100}}


def _two_symbols() -> Pipeline:
    p = Pipeline("units")
    for i, name in enumerate(("a", "b")):
        p.add_node(SourceNode(f"{name}_px", source=[(0, float(i))], interval_settings=MINUTE))
        p.add_node(
            Node(
                f"{name}_x2",
                fn=lambda px, k: px * 2,
                upstreams=[f"{name}_px"],
                interval_settings=MINUTE,
                key_params=["k"],
                k=name,
            )
        )
    p.add_node(
        Node("spread", fn=lambda a, b: a - b, upstreams=["a_x2", "b_x2"], interval_settings=MINUTE)
    )
    return p


def test_the_partition_rule_is_stable_and_spreads_shards() -> None:
    # blake2b of the shard id: the same in every process and Python version (never hash())
    assert partition_for("@AAPL_px", 8) == partition_for("@AAPL_px", 8)
    assert [partition_for(f"@S{i}_px", 8) for i in range(4)] == [
        partition_for(f"@S{i}_px", 8) for i in range(4)
    ]
    spread = {partition_for(f"@S{i}_px", 8) for i in range(200)}
    assert spread == set(range(8))


def test_a_layout_sends_a_nodes_buckets_to_the_partitions_of_its_readers() -> None:
    plan = _two_symbols().build()
    layout = Layout(plan, 4)
    spread_shard = plan.shard_of[plan.by_name["spread"].index]
    home = layout.shard_partition[spread_shard]
    assert layout.destinations[plan.by_name["a_x2"].index] == [home]
    assert layout.readers[(plan.by_name["b_x2"].index, home)] == [spread_shard]
    assert plan.by_name["a_px"].index not in layout.destinations  # read only in its shard
    changed = _two_symbols()
    changed.nodes["spread"] = Node(
        "spread", fn=lambda a, b: a + b, upstreams=["a_x2", "b_x2"], interval_settings=MINUTE
    )
    assert plan_hash(changed.build()) != layout.hash  # other code, other plan


def test_values_survive_the_message_format_non_finite_floats_included() -> None:
    values = [1.5, math.inf, -math.inf, "x", {"a": [1, 2]}, None, (1, "t")]
    again = unpack(pack({"k": "E", "e": list(values)}), 10**6)["e"]
    assert again[:3] == [1.5, math.inf, -math.inf] and again[3:] == values[3:]
    assert type(again[-1]) is tuple  # the codec keeps a tuple a tuple
    assert math.isnan(unpack(pack({"k": "E", "e": math.nan}), 100)["e"])


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xc1 not msgpack", "not a QMTL message"),
        (codec.encode({"v": 2}), "no 'k' kind"),
        (codec.encode({"v": 9, "k": "E"}), "version 9"),
    ],
)
def test_what_is_not_an_engine_message_raises_the_reason(payload: bytes, error: str) -> None:
    with pytest.raises(
        (MalformedEnvelopeError, EnvelopeVersionError, UndecodableEnvelopeError), match=error
    ):
        unpack(payload, 10**6)


def test_a_long_bucket_list_is_split_with_a_final_through_on_each_part() -> None:
    buckets = [[b, "v" * 200] for b in range(100)]
    item = ["node", "1m", buckets, "end", None]
    payloads = fit(
        lambda items: {"k": "B", "b": items},
        [item],
        5000,
        _split_cross,
        lambda i: (i[0], i[1]),
    )
    parts = [codec.decode(p)["b"][0] for p in payloads]
    assert len(payloads) > 4 and all(len(p) <= 5000 for p in payloads)
    assert [b for part in parts for b, _v in part[2]] == list(range(100))
    # each part is final through its own last bucket; only the last carries the real one
    assert [part[3] for part in parts[:-1]] == [part[2][-1][0] for part in parts[:-1]]
    assert parts[-1][3] == "end"


def test_one_value_too_large_for_a_message_names_its_node_and_the_settings() -> None:
    item = ["big_node", "1m", [[0, "x" * 3000]], 0, None]
    with pytest.raises(OversizedValueError) as caught:
        fit(
            lambda items: {"k": "B", "b": items}, [item], 2000, _split_cross, lambda i: (i[0], i[1])
        )
    message = str(caught.value)
    assert (caught.value.node, caught.value.interval) == ("big_node", "1m")
    assert "Node 'big_node'" in message and "at interval 1m" in message
    assert "max_message_bytes" in message and "max.message.bytes" in message


def _feed(state: Any, source: str, events: list[tuple[float, float]], end: bool = False) -> None:
    shard = state.of_node(source)
    for ts, value in events:
        shard.on_event(source, ts, value)
    if end:
        shard.end_source(source)


def test_a_shard_sends_each_bucket_with_its_final_through_and_ends_after_its_sources() -> None:
    plan = _two_symbols().build()
    layout = Layout(plan, 1)
    store = MemoryPendingStore()
    owned = Partition(layout, store, "scope/0", 0, "token", MemoryStateBackend())
    run = owned.run("r1", plan.pipeline)
    assert run is not None
    _feed(run, "a_px", [(10.0, 1.0), (70.0, 2.0), (130.0, 3.0)])
    produced = Produced()
    for _run, shard in owned.touched():
        shard.collect(produced)
    [(key, items)] = produced.cross.items()
    assert key == (0, "r1", "units")
    # a_x2's buckets 0 and 1 are final (the watermark passed 120): both, and final-through 1
    assert items == [["a_x2", "1m", [[0, 2.0], [1, 4.0]], 1, None]]
    outputs = {(n, i): bk for n, i, bk, _ends, _values in produced.outputs[key]}
    assert outputs == {("a_px", "1m"): [0, 1], ("a_x2", "1m"): [0, 1]}
    assert not produced.ends  # a_px has not ended
    _feed(run, "a_px", [], end=True)
    produced = Produced()
    for _run, shard in owned.touched():
        shard.collect(produced)
    assert produced.cross[key] == [["a_x2", "1m", [[2, 6.0]], "end", None]]
    assert produced.ends[key] == {
        "a_px": {"buckets": {"1m": 3}, "events": 3, "late": 0},
        "a_x2": {"buckets": {"1m": 3}},
    }
    assert produced.written == 2  # the bucket of each node that became final now


def test_a_partitions_state_survives_a_new_owner_and_a_zombie_is_fenced_out() -> None:
    plan = _two_symbols().build()
    layout = Layout(plan, 1)
    store = MemoryPendingStore()
    state = MemoryStateBackend()
    first = Partition(layout, store, "scope/0", 0, "first", state)
    run = first.run("r1", plan.pipeline)
    assert run is not None
    _feed(run, "a_px", [(10.0, 1.0), (70.0, 2.0)])
    first.next_offset = 3
    for _run, shard in first.touched():
        shard.collect(Produced())
    assert first.save()
    second = Partition(layout, store, "scope/0", 0, "second", state)  # the partition moved
    assert second.next_offset == 3
    again = second.run("r1", plan.pipeline)
    assert again is not None
    _feed(again, "a_px", [(130.0, 3.0)])
    produced = Produced()
    for _run, shard in second.touched():
        shard.collect(produced)
    # bucket 0 went out before the move; the restored shard continues with bucket 1
    assert produced.cross[(0, "r1", "units")] == [["a_x2", "1m", [[1, 4.0]], 1, None]]
    first.next_offset = 9
    run.touched.add(plan.shard_of[plan.by_name["a_px"].index])
    assert not first.save()  # the zombie's save is refused: the new owner's state stands
    assert store.load("scope/0", "offset")["next"] == b"3"


def test_a_run_that_ended_on_a_partition_leaves_a_tombstone() -> None:
    plan = _two_symbols().build()
    layout = Layout(plan, 1)
    store = MemoryPendingStore()
    owned = Partition(layout, store, "scope/0", 0, "t", MemoryStateBackend())
    run = owned.run("r1", plan.pipeline)
    assert run is not None
    for source in ("a_px", "b_px"):
        _feed(run, source, [(10.0, 1.0)], end=True)
    produced = Produced()
    for _run, shard in list(owned.touched()):
        shard.collect(produced)
    # the cross-shard buckets arrive (on this one partition) and end the spread's shard too
    for node, interval, buckets, through, failed in produced.cross[(0, "r1", "units")]:
        for reader in layout.readers[(layout.index[node], 0)]:
            run.shard(reader).on_upstream(node, interval, buckets, through, failed)
    for _run, shard in list(owned.touched()):
        shard.collect(produced)
    assert produced.ends[(0, "r1", "units")]["spread"] == {"buckets": {"1m": 1}}
    assert owned.save()
    assert owned.run("r1", plan.pipeline) is None  # ended: a late duplicate is ignored
    assert "~end" in store.load("scope/0", "run:r1")
    reloaded = Partition(layout, store, "scope/0", 0, "t2", MemoryStateBackend())
    assert reloaded.run("r1", plan.pipeline) is None


def test_a_failing_node_ends_its_shard_and_tells_its_readers() -> None:
    p = Pipeline("failing-unit")
    p.add_node(SourceNode("a", source=[(0, 1.0)], interval_settings=MINUTE))
    p.add_node(SourceNode("b", source=[(0, 2.0)], interval_settings=MINUTE))
    p.add_node(Node("boom", fn=lambda a: 1 / (a - 2.0), upstreams=["a"], interval_settings=MINUTE))
    p.add_node(
        Node(
            "after", fn=lambda boom, b: boom + b, upstreams=["boom", "b"], interval_settings=MINUTE
        )
    )
    plan = p.build()
    layout = Layout(plan, 1)
    owned = Partition(layout, MemoryPendingStore(), "s/0", 0, "t", MemoryStateBackend())
    run = owned.run("r", plan.pipeline)
    assert run is not None
    _feed(run, "a", [(10.0, 1.0), (70.0, 2.0), (130.0, 3.0)])
    produced = Produced()
    for _run, shard in owned.touched():
        shard.collect(produced)
    key = (0, "r", "failing-unit")
    assert [b for n, _i, bk, _e, _v in produced.outputs[key] for b in bk if n == "boom"] == [0]
    assert produced.ends[key]["boom"]["error"] == "ZeroDivisionError: float division by zero"
    assert produced.ends[key]["a"]["upstream_failed"] == "boom"
    assert [item[4] for item in produced.cross[key]] == ["boom"]  # readers are told
    assert [node for node, error in produced.failures] == ["boom"]
    assert isinstance(produced.failures[0][1], ZeroDivisionError)


def test_the_run_topics_of_a_finite_run_never_meet_a_deployments() -> None:
    deployment, own = run_topics("prices", plan="3f2a"), run_topics("prices", "abc123")
    assert (deployment.shard, deployment.out, deployment.group, deployment.inputs) == (
        "qmtl.shard.prices.3f2a",
        "qmtl.out.prices.3f2a",
        "qmtl.prices",
        "qmtl.prices.input.3f2a",
    )
    assert own.shard == "qmtl.run.abc123.shard.prices" and own.group == "qmtl.run.abc123.prices"
    # a pipeline whose name ends like a run id still cannot collide with another's run topics
    assert run_topics("prices.abc123").shard != own.shard
    assert own.dead_letter == deployment.dead_letter == "qmtl.dlq.prices"


def test_the_run_id_travels_in_the_seed_envelope_and_is_optional() -> None:
    with_run = decode(encode(Envelope("p", "n", 1.0, 2, run="abc")))
    assert with_run.run == "abc"
    assert decode(encode(Envelope("p", "n", 1.0, 2))).run is None
    assert len(encode(Envelope("p", "n", 1.0, 2))) < len(
        encode(Envelope("p", "n", 1.0, 2, run="abc"))
    )


def test_plugin_registers_the_engine_and_worker_without_heavy_imports() -> None:
    code = (
        "import sys\n"
        "from qmtl.plugins import load_plugins\n"
        "plugins = load_plugins()\n"
        "reg = plugins.engines.get('kafka')\n"
        "print(reg.settings_model.__name__)\n"
        "print('confluent_kafka' in sys.modules, 'redis' in sys.modules)\n"
        "from qmtl.cli import build_cli\n"
        "print('worker' in build_cli().commands)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["KafkaEngineSettings", "False", "False", "True"]
