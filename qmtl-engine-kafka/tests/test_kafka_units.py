"""Pieces of the Kafka engine that need no broker: the merge rule, pending state, the run id,
the plugin's registrations."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl_engine_kafka._batch import Batch
from qmtl_engine_kafka._slots import MergeSlot
from qmtl_engine_kafka.envelope import Envelope, decode, encode
from qmtl_engine_kafka.pending import MemoryPendingStore, pending_store_for
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.worker import RunContext

MINUTE = {"1m": {"interval": "1m", "period": 10}}


def _merge_slot(partitions: int) -> tuple[MergeSlot, Any]:
    p = Pipeline("merge-unit")
    p.add_node(SourceNode("px", source=[(0, 1.0)], interval_settings=MINUTE))
    p.add_node(Node("twice", fn=lambda px: px * 2, upstreams=["px"], interval_settings=MINUTE))
    plan = p.build()
    ctx = RunContext(
        plan,
        "r1",
        KafkaEngineSettings(),
        MemoryStateBackend(),
        MemoryPendingStore(),
        {"px": partitions},
    )
    task = SimpleNamespace(ctx=ctx, node=plan.by_name["px"], partitions=partitions)
    return MergeSlot(task), ctx  # type: ignore[arg-type]


def _partial(
    origin: int,
    bucket: int | None,
    ts: float,
    value: Any = None,
    kind: str = "event",
    watermark: float | None = None,
) -> Envelope:
    return Envelope(
        "merge-unit",
        "px",
        ts,
        value,
        "",
        "1m",
        bucket,
        watermark,
        kind,  # type: ignore[arg-type]
        str(origin),
        1,
        "r1",
    )


def _emitted(batch: Batch) -> list[tuple[int, Any]]:
    out = []
    for _topic, payload in batch.messages:
        env = decode(payload)
        if env.kind == "event":
            out.append((env.bucket, env.value))
    return out


def test_a_bucket_waits_for_every_partition_and_takes_the_latest_event() -> None:
    slot, _ctx = _merge_slot(2)
    batch = Batch()
    slot.handle(_partial(0, 10, 605.0, "p0-late"), 0, batch)
    slot.handle(_partial(0, 11, 661.0, "p0-next"), 0, batch)
    assert _emitted(batch) == []  # partition 1 has said nothing about bucket 10 yet
    slot.handle(_partial(1, 10, 601.0, "p1-early"), 1, batch)
    assert _emitted(batch) == [(10, "p0-late")]  # both final through 10; last event by ts
    assert [w.value for w in batch.writes] == ["p0-late"]


def test_equal_timestamps_go_to_the_higher_partition() -> None:
    slot, _ctx = _merge_slot(3)
    batch = Batch()
    slot.handle(_partial(2, 5, 330.0, "from-2"), 2, batch)
    slot.handle(_partial(0, 5, 330.0, "from-0"), 0, batch)
    slot.handle(_partial(1, None, 0.0, kind="watermark", watermark=360.0), 1, batch)
    assert _emitted(batch) == [(5, "from-2")]


def test_the_source_ends_when_every_partition_ended_and_counts_add_up() -> None:
    slot, _ctx = _merge_slot(2)
    batch = Batch()
    slot.handle(_partial(0, 1, 70.0, 1.5), 0, batch)
    slot.handle(_partial(0, None, 0.0, {"events": 3, "late": 1}, kind="end"), 0, batch)
    assert not slot.emitter.ended
    slot.handle(_partial(1, None, 0.0, {"events": 2, "late": 0}, kind="end"), 1, batch)
    ends = [decode(p) for _t, p in batch.ends]
    assert ends[-1].value == {"buckets": {"1m": 1}, "events": 5, "late": 1}


def test_merge_state_survives_a_save_and_load() -> None:
    slot, _ctx = _merge_slot(2)
    batch = Batch()
    slot.handle(_partial(0, 4, 250.0, "kept"), 0, batch)
    slot.offsets["qmtl.merge.merge-unit.px/0"] = 7
    data = codec.decode(codec.encode(slot.dump()))
    again, _ = _merge_slot(2)
    again.load(data)
    assert again.offsets == {"qmtl.merge.merge-unit.px/0": 7}
    batch = Batch()
    again.handle(_partial(1, None, 0.0, kind="watermark", watermark=300.0), 1, batch)
    assert _emitted(batch) == [(4, "kept")]


def test_memory_pending_store_round_trip_and_choice_by_backend() -> None:
    store = MemoryPendingStore()
    assert store.load("p", "r", "n") is None
    store.save("p", "r", "n", {"offsets": {"t/0": 3}})
    assert store.load("p", "r", "n") == {"offsets": {"t/0": 3}}
    assert isinstance(pending_store_for(MemoryStateBackend()), MemoryPendingStore)


def test_the_run_id_travels_in_the_envelope_and_is_optional() -> None:
    with_run = decode(encode(Envelope("p", "n", 1.0, 2, run="abc")))
    assert with_run.run == "abc"
    assert decode(encode(Envelope("p", "n", 1.0, 2))).run is None
    assert b'"run"' not in encode(Envelope("p", "n", 1.0, 2))


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


def test_a_fenced_out_worker_cannot_overwrite_the_new_owners_state() -> None:
    store = MemoryPendingStore()
    store.claim("p", "r", "node", "zombie")
    assert store.save("p", "r", "node", {"offsets": {"t/0": 10}}, "zombie")
    store.claim("p", "r", "node", "new-owner")  # the partition moved
    assert store.save("p", "r", "node", {"offsets": {"t/0": 20}}, "new-owner")
    assert not store.save("p", "r", "node", {"offsets": {"t/0": 12}}, "zombie")
    assert store.load("p", "r", "node") == {"offsets": {"t/0": 20}}
