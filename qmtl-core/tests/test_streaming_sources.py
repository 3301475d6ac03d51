"""Sources feeding streaming runs, the notebook iterator, the mock engine and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import SourceError
from qmtl.mock import MockExecutionEngine
from qmtl.sources import FileSourceProcessor, Watermark, source_events
from qmtl.state import MemoryStateBackend
from qmtl.streaming import OutputEvent

MINUTE = {"1m": {"interval": "1m", "period": 10}}


def one_source(source: object, **kwargs: object) -> Pipeline:
    p = Pipeline("src", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=source, **kwargs))
    p.add_node(Node("x10", fn=lambda px: px * 10, upstreams=["px"]))
    return p


def bars(pipeline: Pipeline, node: str = "x10", **options: object) -> list[tuple[float, object]]:
    events: list[OutputEvent] = []
    pipeline.run(events.append, engine="local", state=MemoryStateBackend(), **options)
    return [(e.ts, e.value) for e in events if e.node == node]


def test_csv_file_source_with_epoch_and_iso_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "timestamp,price,symbol\n1970-01-01T00:00:10Z,1.5,A\n50,2.5,A\n1970-01-01T00:01:05,4,A\n"
    )
    assert bars(one_source(FileSourceProcessor(path, value_column="price"))) == [
        (60.0, 25.0),
        (120.0, 40),
    ]
    rows = list(FileSourceProcessor(path).events())
    assert rows[0] == (10.0, {"price": 1.5, "symbol": "A"})


def test_csv_errors_name_the_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,price\n10,1\nyesterday,2\n")
    with pytest.raises(SourceError, match=r"bad.csv line 3: cannot read timestamp 'yesterday'"):
        list(FileSourceProcessor(path).events())
    with pytest.raises(SourceError, match="has no column 'close'"):
        list(FileSourceProcessor(path, value_column="close").events())
    with pytest.raises(SourceError, match="cannot open CSV source"):
        list(FileSourceProcessor(tmp_path / "missing.csv").events())


def test_a_callable_returning_a_generator_restarts_on_every_run() -> None:
    def ticks() -> Iterator[tuple[float, float]]:
        yield from [(5, 1.0), (65, 2.0)]

    pipeline = one_source(ticks)
    assert bars(pipeline) == [(60.0, 10.0), (120.0, 20.0)]
    assert bars(pipeline) == [(60.0, 10.0), (120.0, 20.0)]


def test_plain_values_in_a_list_are_errors_and_datetimes_converted() -> None:
    # SPEC §5.2a: only a live source's single result is stamped when read (test_event_times)
    with pytest.raises(SourceError, match=r"source 'px': item 7 is not a \(ts, value\) pair"):
        list(source_events([7, 8, 9], "px", clock=lambda: 30.0))
    moment = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    naive = datetime(2024, 1, 1, 0, 1, 30)
    events = list(source_events([(moment, 1), (naive, 2)], "px"))
    assert events == [(moment.timestamp(), 1), (moment.timestamp() + 60, 2)]
    with pytest.raises(SourceError, match="source 'px': event time nan"):
        list(source_events([(float("nan"), 1)], "px"))


def test_a_user_defined_source_processor() -> None:
    class Ticks:
        def events(self) -> list[tuple[float, float]]:
            return [(0, 3.0), (61, 4.0)]

    assert bars(one_source(Ticks())) == [(60.0, 30.0), (120.0, 40.0)]


def test_sources_with_their_own_pace_are_merged_in_event_time() -> None:
    p = Pipeline("paces", default_intervals=MINUTE)
    p.add_node(SourceNode("fast", source=[(i * 10, float(i)) for i in range(30)]))
    p.add_node(SourceNode("slow", source=[(i * 100, float(i)) for i in range(3)]))
    p.add_node(Node("pair", fn=lambda fast, slow: [fast, slow], upstreams=["fast", "slow"]))
    got = bars(p, "pair")
    assert got[:3] == [(60.0, [5.0, 0.0]), (120.0, [11.0, 1.0]), (180.0, [17.0, 1.0])]
    assert got[-1] == (300.0, [29.0, 2.0])  # slow ended at 200: its last price carries


def test_sources_option_replaces_declared_input() -> None:
    assert bars(one_source([(0, 1.0)]), sources={"px": [(0, 9.0)]}) == [(60.0, 90.0)]
    with pytest.raises(SourceError, match="not sources of pipeline"):
        bars(one_source([(0, 1.0)]), sources={"nope": []})


def test_the_iterator_form_yields_bars_and_then_the_summary() -> None:
    stream = one_source([(0, 1.0), (61, 2.0), (130, 3.0)]).stream(engine="local")
    got = [(e.node, e.ts, e.value) for e in stream]
    assert [g for g in got if g[0] == "x10"] == [
        ("x10", 60.0, 10.0),
        ("x10", 120.0, 20.0),
        ("x10", 180.0, 30.0),
    ]
    assert len(got) == 6
    assert stream.summary.buckets_out == 6


def test_live_sources_are_not_batched() -> None:
    """A generator may be a live feed: each bucket flows through as soon as it is final."""
    seen: list[tuple[str, float]] = []

    def live() -> Iterator[tuple[float, float]]:
        for i in range(4):
            yield i * 60.0, float(i)
            seen.append(("read", i * 60.0))

    one_source(live).run(lambda e: seen.append((e.node, e.ts)), engine="local", state="memory")
    # x10's first bar (minute 0) is out as soon as the event at 60 s closes that minute,
    # before the source is asked for its next event
    assert seen.index(("x10", 60.0)) < seen.index(("read", 60.0))


def test_the_iterator_can_stop_early() -> None:
    stream = one_source([(i * 60, float(i)) for i in range(10_000)]).stream(engine="local")
    first = next(stream)
    stream.close()
    assert first.value == 0.0
    with pytest.raises(StopIteration):
        next(stream)


def test_mock_engine_streams_with_mocks_and_records_calls() -> None:
    engine = MockExecutionEngine(mocks={"x10": lambda px: -px, "px": 2.0})
    events: list[OutputEvent] = []
    one_source([(0, 1.0), (70, 5.0)]).run(events.append, engine=engine, state="memory")
    assert [(e.node, e.value) for e in events] == [
        ("px", 2.0),
        ("x10", -2.0),
        ("px", 2.0),
        ("x10", -2.0),
    ]
    assert engine.calls["x10"] == [{"px": 2.0}, {"px": 2.0}]


def test_cli_run_stream_prints_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "strategy_stream.py").write_text(
        "from qmtl import Node, Pipeline, SourceNode\n"
        "pipeline = Pipeline('cli', default_intervals={'1m': {'interval': '1m', 'period': 2}})\n"
        "pipeline.add_node(SourceNode('px', source=[(0, 1.0), (30, 2.0), (90, 3.0), (95, 1.0)]))\n"
        "pipeline.add_node(Node('x', fn=lambda px: px * 2, upstreams=['px']))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from qmtl.cli import cli

    result = CliRunner().invoke(cli, ["run", "strategy_stream:pipeline", "--stream", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["events_in"] == 4
    assert data["buckets_out"] == 4
    assert data["nodes"]["x"]["buckets_out"] == {"1m": 2}


def test_a_live_feed_closes_buckets_with_watermarks() -> None:
    seen: list[tuple[str, object]] = []

    def live() -> Iterator[object]:
        yield (10.0, 1.0)
        yield Watermark(125.0)  # idle: nothing new until 125 s
        seen.append(("resumed", None))
        yield (30.0, 9.0)  # minute 0 is final: late
        yield (130.0, 2.0)

    events: list[OutputEvent] = []

    def record(event: OutputEvent) -> None:
        seen.append((event.node, event.ts))
        events.append(event)

    summary = one_source(live).run(record, engine="local", state="memory")
    assert seen.index(("x10", 60.0)) < seen.index(("resumed", None))
    assert [(e.ts, e.value) for e in events if e.node == "x10"] == [(60.0, 10.0), (180.0, 20.0)]
    assert summary.late_events == 1


@pytest.mark.parametrize("bad", [-1, "5s", True, float("nan")])
def test_allowed_lateness_must_be_seconds(bad: object) -> None:
    from qmtl.errors import PipelineValidationError

    with pytest.raises(PipelineValidationError, match="allowed_lateness must be seconds"):
        SourceNode("px", source=[], allowed_lateness=bad)


def test_csv_rows_that_do_not_fit_are_source_errors(tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text("timestamp,price\n60,1\n120\n")
    with pytest.raises(SourceError, match=r"short.csv line 3 has no cell for column 'price'"):
        list(FileSourceProcessor(short, value_column="price").events())
    long = tmp_path / "long.csv"
    long.write_text("timestamp,price\n60,1,2\n")
    with pytest.raises(SourceError, match="more cells than the header"):
        list(FileSourceProcessor(long).events())
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"timestamp,name\n60,caf\xe9\n")
    with pytest.raises(SourceError, match="encoding="):
        list(FileSourceProcessor(latin).events())
    assert list(FileSourceProcessor(latin, encoding="latin-1").events()) == [
        (60.0, {"name": "caf\u00e9"})
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,price\n60,x\n")
    with pytest.raises(SourceError, match=r"convert= failed on cell 'x' of column 'price'"):
        list(FileSourceProcessor(bad, value_column="price", convert=float).events())


def test_a_failing_source_keeps_the_buckets_final_before_it(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "timestamp,price\n" + "".join(f"{60 * i + 1},{i}\n" for i in range(10)) + "oops,1\n"
    )
    pipeline = one_source(FileSourceProcessor(path, value_column="price"))
    state = MemoryStateBackend()
    with pytest.raises(SourceError, match="line 12"):
        pipeline.run(engine="local", state=state)
    assert pipeline.get_interval_data("x10", "1m", count=None, state=state) == [
        i * 10 for i in reversed(range(9))
    ]


def test_mock_engine_applies_source_mocks_to_explicit_arrivals() -> None:
    engine = MockExecutionEngine(mocks={"px": 3.0})
    events: list[OutputEvent] = []
    one_source([(0, 1.0)]).run(
        events.append, engine=engine, state="memory", events=[("px", 5, 1.0), ("px", 65, 2.0)]
    )
    assert [(e.node, e.ts, e.value) for e in events if e.node == "x10"] == [
        ("x10", 60.0, 30.0),
        ("x10", 120.0, 30.0),
    ]


@pytest.mark.parametrize("form", ["execute", "run", "by kind"])
def test_a_mock_of_a_node_the_pipeline_lacks_is_an_error_naming_it(form: str) -> None:
    """A typo in mocks= would otherwise let the real node run unnoticed."""
    from qmtl.errors import UnknownNodeError

    pipeline = Pipeline("mocked")
    pipeline.add_node(SourceNode("price_source", source=[(60.0, 1.0)]))
    pipeline.add_node(
        Node("double", fn=lambda price_source: price_source * 2, upstreams=["price_source"])
    )
    mocks = {"price_sorce": 100.5}
    with pytest.raises(UnknownNodeError) as caught:
        if form == "execute":
            pipeline.execute(engine=MockExecutionEngine(mocks=mocks))
        elif form == "run":
            pipeline.run(engine=MockExecutionEngine(mocks=mocks))
        else:
            pipeline.execute(engine="mock", engine_options={"mocks": mocks})
    message = str(caught.value)
    assert "'price_sorce'" in message and "did you mean 'price_source'" in message
    assert "['double', 'price_source']" in message
