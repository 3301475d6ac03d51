"""Arguments of execute/run/stream and the history API are checked at the edge (issue 13 items
6 and 7): one set of run options on every engine, ``timeout`` honoured everywhere, and the same
clear error on a fresh pipeline as on one that ran."""

from __future__ import annotations

import time
from typing import Any

import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import ConfigurationError, PipelineTimeoutError, QmtlError
from qmtl.mock import MockExecutionEngine
from qmtl.state import MemoryStateBackend

MINUTE = {"1m": {"interval": "1m", "period": 10}}


def slow(seconds: float) -> Any:
    def fn(px: float) -> float:
        time.sleep(seconds)
        return px

    return fn


def pipeline(seconds: float = 0.0) -> Pipeline:
    p = Pipeline("args")
    p.add_node(
        SourceNode("px", source=[(60.0 * i, float(i)) for i in range(6)], interval_settings=MINUTE)
    )
    p.add_node(Node("slow", fn=slow(seconds), upstreams=["px"], interval_settings=MINUTE))
    return p


def test_a_misspelt_run_option_names_it_on_every_form() -> None:
    for call in (
        lambda p: p.run(engine="mock", timout=1),
        lambda p: p.stream(engine="mock", timout=1),
        lambda p: p.run(engine=MockExecutionEngine(), timout=1),
    ):
        with pytest.raises(ConfigurationError) as caught:
            call(pipeline())
        message = str(caught.value)
        assert "'timout'" in message and "did you mean 'timeout'" in message
        assert "pipeline 'args'" in message


def test_a_misspelt_execute_option_is_a_qmtl_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'timout'.*did you mean 'timeout'"):
        pipeline().execute(engine="mock", timout=1)  # type: ignore[call-arg]


def test_run_timeout_is_honoured_on_the_mock_engine() -> None:
    p = pipeline(seconds=0.5)
    state = MemoryStateBackend()
    with pytest.raises(PipelineTimeoutError) as caught:
        p.run(engine="mock", state=state, timeout=0.3)
    assert caught.value.node == "slow" and "0.3s" in str(caught.value)


def test_stream_timeout_is_honoured_and_raised_by_the_iterator() -> None:
    stream = pipeline(seconds=0.5).stream(engine="mock", state=MemoryStateBackend(), timeout=0.3)
    with pytest.raises(PipelineTimeoutError):
        list(stream)


def test_execute_timeout_is_honoured_on_the_mock_engine() -> None:
    p = Pipeline("slow-once")
    p.add_node(Node("a", fn=lambda: 1))
    p.add_node(Node("b", fn=lambda a: time.sleep(0.5) or a, upstreams=["a"]))
    with pytest.raises(PipelineTimeoutError) as caught:
        p.execute(engine="mock", timeout=0.1)
    assert caught.value.node == "b"


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"engine": 123}, ["engine=123", "'local'"]),
        ({"state": 123}, ["state=123", "'memory'"]),
        ({"engine_options": [1]}, ["engine_options", "mapping"]),
        ({"state_options": "url"}, ["state_options", "mapping"]),
        ({"inputs": [1]}, ["inputs=", "map node names"]),
        ({"test_mode": "yes"}, ["test_mode='yes'", "True or False"]),
        ({"redis_uri": 5}, ["redis_uri=5"]),
        ({"timeout": -1}, ["timeout=-1", "positive"]),
    ],
)
def test_bad_execute_arguments_are_configuration_errors(
    kwargs: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        pipeline().execute(**kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"engine": 123}, ["engine=123"]),
        ({"on_output": 5}, ["on_output=5", "not callable"]),
        ({"clock": "now"}, ["clock='now'", "not callable"]),
        ({"sources": [1]}, ["sources=", "map source names"]),
        ({"events": "px"}, ["events=", "(source, ts, value)"]),
        ({"timeout": 0}, ["timeout=0"]),
    ],
)
def test_bad_run_arguments_are_configuration_errors(
    kwargs: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        pipeline().run(**kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"count": -1}, ["count=-1", ">= 0"]),
        ({"count": "5"}, ["count='5'", "whole number"]),
        ({"count": 2.5}, ["count=2.5"]),
        ({"count": True}, ["count=True"]),
        ({"start_ts": "yesterday"}, ["start_ts='yesterday'", "epoch seconds"]),
        ({"end_ts": float("nan")}, ["end_ts=nan"]),
        ({"state": 7}, ["state=7"]),
    ],
)
@pytest.mark.parametrize("ran", [False, True], ids=["fresh", "after-a-run"])
def test_history_arguments_fail_the_same_on_fresh_and_run_pipelines(
    kwargs: dict[str, Any], fragments: list[str], ran: bool
) -> None:
    p = pipeline()
    if ran:
        p.run(engine="mock", state=MemoryStateBackend())
    for read in (p.get_history, p.get_interval_data):
        with pytest.raises(ConfigurationError) as caught:
            read("slow", "1m", **kwargs)
        message = str(caught.value)
        assert read.__name__ in message and "pipeline 'args'" in message
        for fragment in fragments:
            assert fragment in message
        assert "qmtl:" not in message  # a node is named, never a storage key


def test_valid_counts_still_read() -> None:
    p = pipeline()
    p.run(engine="mock", state=MemoryStateBackend())
    assert p.get_interval_data("slow", "1m", count=0) == []
    assert p.get_interval_data("slow", "1m", count=2) == [5.0, 4.0]
    assert len(p.get_history("slow", "1m", count=None)) == 6


def test_node_name_must_be_a_string() -> None:
    with pytest.raises(QmtlError, match="node_name=3"):
        pipeline().get_history(3)  # type: ignore[arg-type]
