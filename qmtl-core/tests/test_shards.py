"""Shards in the plan (qmtl.shards): the default rule, explicit names, the cycle check, drawing
them, and running a pipeline shard by shard with the core's runner (what a sharded engine
does), which must give exactly the whole-plan runner's results."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from qmtl import Node, Pipeline, QueryNode, SourceNode
from qmtl.errors import ConfigurationError, PipelineValidationError, ShardCycleError
from qmtl.plan import ExecutionPlan
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import StreamRunner, run_in_process
from qmtl.streaming import END, OutputEvent
from qmtl.subplans import shard_plan
from qmtl.testing.pipelines import BASE, CASES

MINUTE = {"1m": {"interval": "1m", "period": 30, "max_history": 1000}}


def _ret(px: float, prev: float = 0.0) -> float:
    return round(px / 100 - 1 + prev, 6)


def symbols(names: list[str], events: int = 40) -> Pipeline:
    """Per symbol: price source -> 2-bucket return -> sign; a spread over the first two; a
    query node over every signal."""
    p = Pipeline("shards-unit")
    for i, name in enumerate(names):
        prices = [(BASE + 20 * j + i, 100.0 + ((j * (i + 3)) % 11)) for j in range(events)]
        p.add_node(SourceNode(f"{name}_px", source=prices, interval_settings=MINUTE))
        p.add_node(
            Node(
                f"{name}_ret",
                fn=lambda px_window: round(px_window[-1] / px_window[0] - 1, 6),
                upstreams=[f"{name}_px"],
                window=2,
                interval_settings=MINUTE,
            )
        )
        p.add_node(
            Node(
                f"{name}_sig",
                fn=lambda r: (r > 0) - (r < 0),
                upstreams=[f"{name}_ret"],
                tags=["SIG"],
                interval_settings=MINUTE,
            )
        )
    a, b = names[:2]
    p.add_node(
        Node(
            "spread",
            fn=lambda x, y: round(x - y, 4),
            upstreams=[f"{a}_px", f"{b}_px"],
            interval_settings=MINUTE,
        )
    )
    p.add_query_node(QueryNode("signals", ["SIG"], interval="1m", fn=lambda d: sum(d.values())))
    return p


def _ids(plan: ExecutionPlan) -> dict[str, str]:
    return {node.name: plan.shards[plan.shard_of[node.index]].id for node in plan.nodes}


def test_nodes_depending_on_the_same_sources_form_one_shard() -> None:
    plan = symbols(["AAPL", "MSFT", "IBM"]).build()
    ids = _ids(plan)
    assert ids["AAPL_px"] == ids["AAPL_ret"] == ids["AAPL_sig"] == "@AAPL_px"
    assert ids["MSFT_sig"] == "@MSFT_px"
    assert ids["spread"] == "@AAPL_px+MSFT_px"  # a join of two symbols starts its own shard
    assert ids["signals"] == "@AAPL_px+IBM_px+MSFT_px"  # the query over every symbol
    assert len(plan.shards) == 5
    by_id = {s.id: s for s in plan.shards}
    assert [plan.nodes[i].name for i in by_id["@AAPL_px"].nodes] == [
        "AAPL_px",
        "AAPL_ret",
        "AAPL_sig",
    ]
    assert {plan.shards[u].id for u in by_id["@AAPL_px+MSFT_px"].upstreams} == {
        "@AAPL_px",
        "@MSFT_px",
    }
    assert by_id["@AAPL_px"].upstreams == ()


def test_shard_ids_do_not_move_when_other_nodes_are_added() -> None:
    before = _ids(symbols(["AAPL", "MSFT"]).build())
    after = _ids(symbols(["AAPL", "MSFT", "IBM", "TSLA"]).build())
    for name in ("AAPL_px", "AAPL_sig", "MSFT_ret", "spread"):
        assert after[name] == before[name]


def test_a_long_source_list_is_shortened_to_a_stable_digest() -> None:
    names = [f"SYMBOL{i:03d}" for i in range(40)]
    plan = symbols(names, events=2).build()
    query_id = _ids(plan)["signals"]
    assert query_id.startswith("@SYMBOL000_px+39~") and len(query_id) < 64
    assert _ids(symbols(names, events=2).build())["signals"] == query_id


def test_an_explicit_shard_groups_nodes_and_is_not_a_param_or_part_of_the_id() -> None:
    def plain(p: Pipeline, shard: str | None) -> Pipeline:
        p.add_node(SourceNode("a", source=[(BASE, 1.0)], interval_settings=MINUTE))
        p.add_node(SourceNode("b", source=[(BASE, 2.0)], interval_settings=MINUTE))
        p.add_node(
            Node(
                "ta", fn=lambda a: a, upstreams=["a"], shard=shard, **{"interval_settings": MINUTE}
            )
        )
        p.add_node(
            Node("tb", fn=lambda b: b * 2, upstreams=["b"], shard=shard, interval_settings=MINUTE)
        )
        return p

    together = plain(Pipeline("explicit"), "both").build()
    ids = _ids(together)
    assert ids["ta"] == ids["tb"] == "both"
    assert ids["a"] == "@a" and ids["b"] == "@b"
    default = plain(Pipeline("explicit"), None).build()
    assert [n.node_id for n in together.nodes] == [n.node_id for n in default.nodes]
    assert together.by_name["ta"].node.params == {}  # type: ignore[union-attr]
    assert together.by_name["ta"].node.to_definition()["shard"] == "both"  # type: ignore[union-attr]
    assert "shard" not in default.by_name["ta"].node.to_definition()  # type: ignore[union-attr]


def test_an_explicit_shard_that_makes_the_shard_graph_cyclic_names_the_nodes() -> None:
    p = Pipeline("cyclic")
    p.add_node(SourceNode("px", source=[(BASE, 1.0)], interval_settings=MINUTE))
    p.add_node(
        Node("ret", fn=lambda px: px, upstreams=["px"], shard="risk", interval_settings=MINUTE)
    )
    p.add_node(Node("sig", fn=lambda ret: -ret, upstreams=["ret"], interval_settings=MINUTE))
    with pytest.raises(ShardCycleError) as caught:
        p.build()
    message = str(caught.value)
    assert "'ret' (shard 'risk') reads 'px' (shard '@px')" in message
    assert "'sig' (shard '@px') reads 'ret' (shard 'risk')" in message
    assert "one shard" in message


@pytest.mark.parametrize("bad", ["", "  ", "@AAPL", 3])
def test_a_bad_shard_name_is_refused_when_the_node_is_made(bad: Any) -> None:
    with pytest.raises(PipelineValidationError, match="shard must be a non-empty name"):
        Node("x", fn=lambda: 1, shard=bad)


def test_graph_json_lists_shards_and_mermaid_and_dot_draw_them() -> None:
    pipeline = symbols(["AAPL", "MSFT"])
    data = json.loads(pipeline.visualize(format="json"))
    shards = {s["id"]: s for s in data["shards"]}
    assert shards["@AAPL_px"]["nodes"] == ["AAPL_px", "AAPL_ret", "AAPL_sig"]
    assert shards["@AAPL_px+MSFT_px"]["reads"] == ["@AAPL_px", "@MSFT_px"]
    assert {n["name"]: n["shard"] for n in data["nodes"]}["spread"] == "@AAPL_px+MSFT_px"
    mermaid = pipeline.visualize()
    assert mermaid.count("subgraph ") == len(shards) and 'subgraph s0["shard @AAPL_px"]' in mermaid
    dot = pipeline.visualize(format="dot")
    assert dot.count('subgraph "cluster_') == len(shards)
    assert 'label="shard @MSFT_px"' in dot


# -- running shard by shard ---------------------------------------------------------------------
def run_sharded(
    plan: ExecutionPlan, events: list[tuple[str, float, Any]], *, restart_every: int = 0
) -> tuple[MemoryStateBackend, list[OutputEvent]]:
    """A minimal in-process sharded engine: one runner per shard over its sub-plan; a final
    bucket (or a watermark) of a node read by another shard is handed to that shard's runner
    with on_upstream. ``restart_every`` rebuilds every runner from its snapshot that often."""
    state = MemoryStateBackend()
    outputs: list[OutputEvent] = []
    subs = [shard_plan(plan, shard) for shard in plan.shards]
    runners = [StreamRunner(s.plan, state, on_output=outputs.append, remote=s.remote) for s in subs]
    local = [{g: i for i, g in enumerate(s.origin)} for s in subs]
    reads = [{s.origin[i] for i in s.remote} for s in subs]  # global indices read remotely
    told: dict[tuple[int, int], float] = defaultdict(lambda: -float("inf"))
    seen = 0

    def through(shard: int, index: int, k: int) -> float:
        runner, i = runners[shard], local[shard][index]
        bucketer = runner.bucketers[i]
        return bucketer.final[k] if bucketer is not None else runner.aligners[i][k].done

    def exchange() -> None:
        nonlocal seen
        moved = True
        while moved:  # until no shard has news for another
            moved = False
            news: dict[tuple[int, int], list[tuple[int, Any]]] = defaultdict(list)
            for event in outputs[seen:]:
                node = plan.by_name[event.node]
                k = [s.interval.value for s in node.series].index(event.interval)
                news[(node.index, k)].append((event.bucket, event.value))
            seen = len(outputs)
            for shard in plan.shards:
                for index in shard.nodes:
                    for k in range(len(plan.nodes[index].series)):
                        now = through(shard.index, index, k)
                        buckets = news.get((index, k), [])
                        if not buckets and now <= told[(index, k)]:
                            continue
                        told[(index, k)] = now
                        for reader in plan.shards:
                            if index in reads[reader.index]:
                                runners[reader.index].on_upstream(
                                    local[reader.index][index], k, buckets, now
                                )
                                moved = True

    source_shard = {plan.nodes[i].name: plan.shard_of[i] for i in range(len(plan.nodes))}
    for step, (name, ts, value) in enumerate(events):
        shard = source_shard[name]
        runners[shard].on_event(local[shard][plan.by_name[name].index], ts, value)
        exchange()
        if restart_every and step % restart_every == 0:
            for i, sub in enumerate(subs):
                snapshot = json.loads(json.dumps(runners[i].snapshot()))
                runners[i] = StreamRunner(
                    sub.plan, state, on_output=outputs.append, remote=sub.remote
                )
                runners[i].restore(snapshot)
    for source in plan.sources:
        shard = source_shard[source.name]
        runners[shard].end_source(local[shard][source.index])
        exchange()
    for shard in plan.shards:
        for index in shard.nodes:
            for k in range(len(plan.nodes[index].series)):
                assert through(shard.index, index, k) == END, plan.nodes[index].name
    return state, outputs


def _arrival(pipeline: Pipeline) -> list[tuple[str, float, Any]]:
    plan = pipeline.build()
    merged = []
    for node in plan.sources:
        source = getattr(node.node, "source", None)
        merged += [(node.name, ts, value) for ts, value in (source or [])]
    return sorted(merged, key=lambda e: (e[1], e[0]))


def _series(outputs: list[OutputEvent]) -> dict[tuple[str, str], list[tuple[float, Any]]]:
    found: dict[tuple[str, str], list[tuple[float, Any]]] = defaultdict(list)
    for event in outputs:
        found[(event.node, event.interval)].append((event.ts, event.value))
    return dict(found)


@pytest.mark.parametrize("restart_every", [0, 7])
def test_running_shard_by_shard_equals_the_whole_plan(restart_every: int) -> None:
    pipeline = symbols(["AAPL", "MSFT", "IBM"])
    plan = pipeline.build()
    events = _arrival(pipeline)
    expected: list[OutputEvent] = []
    oracle = MemoryStateBackend()
    run_in_process(plan, oracle, on_output=expected.append, events=events)
    state, outputs = run_sharded(plan, events, restart_every=restart_every)
    assert _series(outputs) == _series(expected)
    for node in plan.nodes:
        for spec in node.series:
            assert state.read(spec.key, count=None) == oracle.read(spec.key, count=None)


@pytest.mark.parametrize(
    "name", ["diamond", "windows", "multi_source_join", "query", "multi_interval"]
)
def test_library_cases_shard_by_shard_equal_the_whole_plan(name: str) -> None:
    pipeline = CASES[name].build()
    plan = pipeline.build()
    events = _arrival(pipeline)
    expected: list[OutputEvent] = []
    run_in_process(plan, MemoryStateBackend(), on_output=expected.append, events=events)
    _state, outputs = run_sharded(plan, events, restart_every=5)
    assert _series(outputs) == _series(expected)


def test_a_shard_plan_holds_its_nodes_and_stand_ins_for_remote_upstreams() -> None:
    plan = symbols(["AAPL", "MSFT", "IBM"]).build()
    spread = plan.shards[plan.shard_of[plan.by_name["spread"].index]]
    sub = shard_plan(plan, spread)
    assert [n.name for n in sub.plan.nodes] == ["AAPL_px", "MSFT_px", "spread"]
    assert sub.remote == {0, 1}
    assert sub.plan.by_name["spread"].upstream_index == (0, 1)
    assert sub.plan.by_name["AAPL_px"].upstreams == ()
    assert [plan.nodes[g].name for g in sub.origin] == ["AAPL_px", "MSFT_px", "spread"]


def test_a_namespace_keeps_a_runs_history_apart() -> None:
    pipeline = CASES["chain"].build()
    state = MemoryStateBackend()
    pipeline.run(engine="local", state=state, namespace="backtest-1")
    assert pipeline.get_history("label", "1m", state=state) == []
    kept = pipeline.get_history("label", "1m", state=state, namespace="backtest-1")
    assert len(kept) == 10 and kept[0]["value"].startswith("v=")
    meta = pipeline.get_node_metadata("label", "1m", state=state, namespace="backtest-1")
    assert meta["count"] > 0
    pipeline.run(engine="local", state=state)
    assert len(pipeline.get_history("label", "1m", state=state)) == 10
    with pytest.raises(ConfigurationError, match="namespace must be a non-empty string"):
        pipeline.run(engine="local", state=state, namespace="")
