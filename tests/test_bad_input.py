"""The bad-input catalog: every way a user can hand QMTL something unusable, and what they get.

Each case is one row of :data:`CASES` (its ``id`` is cited by ``docs/reliability.md``). A case
runs ``act(ctx)`` and must end in the expected :class:`~qmtl.errors.QmtlError` subclass (for
stream data: an envelope error with a dead-letter ``reason``) whose message contains every
fragment of ``names`` (the offending object) and of ``fix`` (what to do). It may never end in a
bare ``KeyError``/``AttributeError``/``TypeError``, and the state backend given in ``ctx`` must
hold nothing the failing call half-wrote.

CLI cases (:data:`CLI_CASES`) run ``qmtl`` in-process through click's runner: a non-zero exit,
one ``error:``/``Error:`` line naming the object and the fix, and no traceback. Redis cases
(:data:`REDIS_CASES`) need a real Redis (``scripts/services.py --redis``); the Kafka dead-letter
case needs a real broker (``--kafka``).
"""

from __future__ import annotations

import itertools
import math
import sys
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qmtl.errors import (
    ConfigurationError,
    CycleError,
    DuplicateNodeError,
    IntervalError,
    MissingInputError,
    MissingPeriodError,
    ModelValidationError,
    PipelineValidationError,
    PluginError,
    PluginLoadError,
    QmtlError,
    SourceError,
    SourceExecutionError,
    StateBackendError,
    UnbindableFunctionError,
    UnknownBackendError,
    UnknownNodeError,
    UnknownUpstreamError,
)
from qmtl.models import (
    NodeDefinition,
    PipelineDefinition,
    QueryNodeDefinition,
)
from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.settings import load_settings
from qmtl.sources import FileSourceProcessor
from qmtl.state import MemoryStateBackend, SeriesKey

BARE = (KeyError, AttributeError, TypeError, IndexError)


@dataclass
class Ctx:
    """What a case may use: a tmp dir, a fresh memory backend, monkeypatch, services."""

    tmp: Path
    state: MemoryStateBackend
    monkeypatch: pytest.MonkeyPatch
    redis_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    act: Callable[[Ctx], Any]
    error: type[BaseException]
    names: tuple[str, ...]
    fix: tuple[str, ...] = ()
    marks: tuple[Any, ...] = ()


def _one() -> int:
    return 1


def _p(*nodes: Any, name: str = "p", **kwargs: Any) -> Pipeline:
    pipeline = Pipeline(name, **kwargs)
    for node in nodes:
        pipeline.add_node(node)
    return pipeline


def _run_once(pipeline: Pipeline, ctx: Ctx, **kwargs: Any) -> Any:
    return pipeline.execute(engine="local", state=ctx.state, **kwargs)


def _stream(pipeline: Pipeline, ctx: Ctx, **kwargs: Any) -> Any:
    return pipeline.run(engine="local", state=ctx.state, **kwargs)


def _set_nodes(key: str, value: Any) -> Pipeline:
    pipeline = Pipeline("p")
    pipeline.nodes[key] = value
    return pipeline


def _env(ctx: Ctx, **variables: str) -> None:
    for name, value in variables.items():
        ctx.monkeypatch.setenv(name, value)


def _csv(ctx: Ctx, text: str | bytes, name: str = "prices.csv") -> Path:
    path = ctx.tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip())
    return path


def _csv_run(ctx: Ctx, path: Path, **options: Any) -> Any:
    source = SourceNode(
        "px", source=FileSourceProcessor(path, **options), interval_settings={"1m": {"period": 5}}
    )
    return _stream(_p(source, name="csvp"), ctx)


def _stream_processor(**security: Any) -> Any:
    from qmtl_engine_kafka import KafkaEngineSettings, StreamProcessor

    settings = KafkaEngineSettings(security_protocol="SSL", **security)
    return StreamProcessor(settings, check_connection=False)


def _envelope(data: Any) -> Any:
    from qmtl_engine_kafka.envelope import decode

    return decode(data)


def _kafka_error(name: str) -> type[BaseException]:
    import qmtl_engine_kafka.errors as errors

    return getattr(errors, name)


def _good_envelope(**changes: Any) -> bytes:
    """A version 2 envelope (a MessagePack map, its value as qmtl.codec bytes) with changes."""
    import msgpack

    from qmtl import codec

    body = {
        "v": 2,
        "kind": "event",
        "pipeline": "prices",
        "node": "ticks",
        "node_id": "",
        "interval": None,
        "ts": 1_700_000_000.0,
        "bucket": None,
        "watermark": None,
        "origin": None,
        "value": codec.encode(1.5),
    }
    body.update(changes)
    return msgpack.packb({k: v for k, v in body.items() if v is not ...})


# ---------------------------------------------------------------------------- the catalog

PIPELINE_CASES = [
    Case(
        "pipeline-cycle",
        "pipeline definition",
        lambda c: _run_once(
            _p(Node("a", lambda b: b, upstreams=["b"]), Node("b", lambda a: a, upstreams=["a"])), c
        ),
        CycleError,
        ("a -> b",),
        ("remove one of these upstream links",),
    ),
    Case(
        "pipeline-self-loop",
        "pipeline definition",
        lambda c: _run_once(_p(Node("a", lambda a: a, upstreams=["a"])), c),
        CycleError,
        ("a -> a",),
        ("remove",),
    ),
    Case(
        "pipeline-duplicate-name",
        "pipeline definition",
        lambda c: _p(Node("a", _one), Node("a", _one)),
        DuplicateNodeError,
        ("'a'", "'p'"),
        ("rename",),
    ),
    Case(
        "pipeline-node-and-query-same-name",
        "pipeline definition",
        lambda c: _p(Node("a", _one)).add_query_node(QueryNode("a", tags=["x"])),
        DuplicateNodeError,
        ("'a'",),
        ("rename",),
    ),
    Case(
        "pipeline-unknown-upstream",
        "pipeline definition",
        lambda c: _run_once(_p(Node("a", lambda ghost: ghost, upstreams=["ghost"])), c),
        UnknownUpstreamError,
        ("'a'", "'ghost'"),
        ("add it or fix the name",),
    ),
    Case(
        "pipeline-interval-not-provided",
        "pipeline definition",
        lambda c: _run_once(
            _p(
                Node("a", _one, interval_settings={"1d": {"period": 2}}),
                Node("b", lambda a: a, upstreams=["a"], interval_settings={"1h": {"period": 2}}),
            ),
            c,
        ),
        IntervalError,
        ("'b'", "'a'", "'1h'"),
        ("add '1h' to 'a'",),
    ),
    Case(
        "pipeline-missing-period",
        "pipeline definition",
        lambda c: _run_once(_p(Node("a", _one, interval_settings={"1d": {}})), c),
        MissingPeriodError,
        ("'a'", "'1d'"),
        ("set period=",),
    ),
    Case(
        "pipeline-same-node-id",
        "pipeline definition",
        lambda c: _run_once(_p(Node("a", _one), Node("b", _one)), c),
        PipelineValidationError,
        ("'a'", "'b'"),
        ("key_params",),
    ),
    Case(
        "pipeline-empty-name",
        "pipeline definition",
        lambda c: Pipeline(""),
        PipelineValidationError,
        ("''",),
        ("non-empty string",),
    ),
    Case(
        "pipeline-defaults-unknown-interval",
        "pipeline definition",
        lambda c: Pipeline("p", default_intervals={"2d": {"period": 1}}),
        ModelValidationError,
        ("'2d'", "default_intervals", "'p'"),
        ("use one of",),
    ),
    Case(
        "pipeline-defaults-not-a-mapping",
        "pipeline definition",
        lambda c: Pipeline("p", default_intervals=[("1d", 3)]),
        PipelineValidationError,
        ("default_intervals", "'p'"),
        ("mapping",),
    ),
    Case(
        "pipeline-add-node-not-a-node",
        "pipeline definition",
        lambda c: Pipeline("p").add_node("a"),
        PipelineValidationError,
        ("str",),
        ("add_query_node",),
    ),
    Case(
        "pipeline-add-query-not-a-query",
        "pipeline definition",
        lambda c: Pipeline("p").add_query_node("q"),
        PipelineValidationError,
        ("add_query_node", "str"),
        ("QueryNode",),
    ),
    Case(
        "pipeline-nodes-key-mismatch",
        "pipeline definition",
        lambda c: _run_once(_set_nodes("b", Node("a", _one)), c),
        PipelineValidationError,
        ("'b'", "'a'"),
        ("use the node's name as key",),
    ),
    Case(
        "pipeline-nodes-not-a-node",
        "pipeline definition",
        lambda c: _run_once(_set_nodes("b", 42), c),
        PipelineValidationError,
        ("'b'", "int"),
        ("not a Node",),
    ),
    Case(
        "pipeline-definition-not-a-mapping",
        "pipeline definition",
        lambda c: Pipeline.from_definition([("name", "p")]),
        ModelValidationError,
        ("PipelineDefinition",),
        ("dict",),
    ),
    Case(
        "definition-wrong-types",
        "pipeline definition",
        lambda c: PipelineDefinition.model_validate({"name": 5, "nodes": "abc"}),
        ModelValidationError,
        ("PipelineDefinition", "name", "nodes"),
        ("valid string",),
    ),
    Case(
        "definition-unknown-field",
        "pipeline definition",
        lambda c: NodeDefinition.model_validate({"name": "a", "node_id": "x", "fn": "eval"}),
        ModelValidationError,
        ("NodeDefinition", "fn"),
        ("not permitted",),
    ),
    Case(
        "definition-query-bad-mode",
        "pipeline definition",
        lambda c: QueryNodeDefinition.model_validate(
            {"name": "q", "query_tags": ["x"], "match_mode": "most"}
        ),
        ModelValidationError,
        ("QueryNodeDefinition", "match_mode"),
        ("'all' or 'any'",),
    ),
    Case(
        "definition-nested-bad-interval",
        "pipeline definition",
        lambda c: PipelineDefinition.model_validate(
            {
                "name": "p",
                "nodes": [
                    {
                        "name": "a",
                        "node_id": "x",
                        "stream_settings": {"intervals": {"1d": {"interval": "1x"}}},
                    }
                ],
            }
        ),
        ModelValidationError,
        ("PipelineDefinition", "nodes.0.stream_settings.intervals"),
        ("'1d'",),
    ),
]

NODE_CASES = [
    Case(
        "node-unbindable-too-many",
        "node construction",
        lambda c: Node("a", lambda: 1, upstreams=["x"]),
        UnbindableFunctionError,
        ("'a'", "['x']"),
        ("Name its parameters after the upstreams",),
    ),
    Case(
        "node-unbindable-missing-arg",
        "node construction",
        lambda c: Node("a", lambda x, y: 1, upstreams=["x"]),
        UnbindableFunctionError,
        ("'a'", "'y'"),
        ("Name its parameters",),
    ),
    Case(
        "node-param-clashes-upstream",
        "node construction",
        lambda c: Node("a", lambda x: x, upstreams=["x"], x=3),
        UnbindableFunctionError,
        ("'a'", "['x']"),
        ("rename",),
    ),
    Case(
        "node-fn-missing",
        "node construction",
        lambda c: Node("a"),
        UnbindableFunctionError,
        ("'a'",),
        ("callable fn",),
    ),
    Case(
        "node-fn-not-callable",
        "node construction",
        lambda c: Node("a", 5),
        UnbindableFunctionError,
        ("'a'", "5"),
        ("callable fn",),
    ),
    Case(
        "node-name-not-a-string",
        "node construction",
        lambda c: Node(5, _one),
        PipelineValidationError,
        ("5",),
        ("non-empty string",),
    ),
    Case(
        "node-unknown-interval",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"2d": {"period": 1}}),
        ModelValidationError,
        ("'a'", "'2d'"),
        ("use one of: 1s",),
    ),
    Case(
        "node-interval-key-int",
        "node construction",
        lambda c: Node("a", _one, interval_settings={60: {"period": 1}}),
        ModelValidationError,
        ("'a'", "60"),
        ("use one of",),
    ),
    Case(
        "node-period-zero",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": 0}}),
        ModelValidationError,
        ("'a'", "Period 0", "'1d'"),
        ("at least one interval",),
    ),
    Case(
        "node-period-negative",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": -3}}),
        ModelValidationError,
        ("'a'", "-3"),
        ("at least one interval",),
    ),
    Case(
        "node-period-unreadable",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": "a week"}}),
        ModelValidationError,
        ("'a'", "'a week'"),
        ("for example '7d'",),
    ),
    Case(
        "node-period-not-whole",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1h": {"period": "90m"}}),
        ModelValidationError,
        ("'a'", "'90m'", "'1h'"),
        ("multiple of 3600s",),
    ),
    Case(
        "node-period-float",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": 1.5}}),
        ModelValidationError,
        ("'a'", "1.5"),
        ("int or a duration",),
    ),
    Case(
        "node-period-bool",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": True}}),
        ModelValidationError,
        ("'a'", "True"),
        ("int or a duration",),
    ),
    Case(
        "node-max-history-zero",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": 1, "max_history": 0}}),
        ModelValidationError,
        ("'a'", "max_history"),
        ("greater than or equal to 1",),
    ),
    Case(
        "node-interval-settings-unknown-field",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"period": 1, "ttl": 5}}),
        ModelValidationError,
        ("'a'", "ttl"),
        ("not permitted",),
    ),
    Case(
        "node-interval-key-mismatch",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": {"interval": "1h", "period": 1}}),
        ModelValidationError,
        ("'a'", "'1d'", "'1h'"),
        ("make the key equal",),
    ),
    Case(
        "node-interval-settings-not-a-mapping",
        "node construction",
        lambda c: Node("a", _one, interval_settings=["1d", "1h"]),
        PipelineValidationError,
        ("'a'", "interval_settings"),
        ("mapping",),
    ),
    Case(
        "node-interval-settings-value-not-a-mapping",
        "node construction",
        lambda c: Node("a", _one, interval_settings={"1d": 7}),
        ModelValidationError,
        ("'a'", "1d"),
        ("dictionary",),
    ),
    Case(
        "node-both-settings",
        "node construction",
        lambda c: Node(
            "a",
            _one,
            interval_settings={"1d": {"period": 1}},
            stream_settings={"1d": {"period": 1}},
        ),
        PipelineValidationError,
        ("'a'",),
        ("pass only one",),
    ),
    Case(
        "node-window-zero",
        "node construction",
        lambda c: Node("a", lambda x: x, upstreams=["x"], window=0),
        PipelineValidationError,
        ("'a'", "0"),
        ("positive int or True",),
    ),
    Case(
        "node-window-string",
        "node construction",
        lambda c: Node("a", lambda x: x, upstreams=["x"], window="3"),
        PipelineValidationError,
        ("'a'", "'3'"),
        ("positive int or True",),
    ),
    Case(
        "node-key-param-unknown",
        "node construction",
        lambda c: Node("a", _one, key_params=["k"]),
        PipelineValidationError,
        ("'a'", "['k']"),
        ("params",),
    ),
    Case(
        "node-upstream-twice",
        "node construction",
        lambda c: Node("a", lambda x, y: x, upstreams=["x", "x"]),
        PipelineValidationError,
        ("'a'", "twice"),
        (),
    ),
    Case(
        "node-upstream-not-a-name",
        "node construction",
        lambda c: Node("a", lambda x: x, upstreams=[5]),
        PipelineValidationError,
        ("'a'", "5"),
        ("node name or a Node",),
    ),
    Case(
        "node-upstreams-not-iterable",
        "node construction",
        lambda c: Node("a", lambda x: x, upstreams=5),
        PipelineValidationError,
        ("'a'", "upstreams", "5"),
        ("list",),
    ),
    Case(
        "node-tags-not-iterable",
        "node construction",
        lambda c: Node("a", _one, tags=5),
        PipelineValidationError,
        ("'a'", "tags", "5"),
        ("list of strings",),
    ),
    Case(
        "node-tag-not-a-string",
        "node construction",
        lambda c: Node("a", _one, tags=["ok", 3]),
        PipelineValidationError,
        ("'a'", "3"),
        ("list of strings",),
    ),
    Case(
        "node-processing-without-upstream",
        "node construction",
        lambda c: ProcessingNode("a", _one),
        PipelineValidationError,
        ("'a'",),
        ("use Node or SourceNode",),
    ),
    Case(
        "node-source-with-upstream",
        "node construction",
        lambda c: SourceNode("a", source=[1], upstreams=["x"]),
        PipelineValidationError,
        ("'a'",),
        ("cannot have upstreams",),
    ),
    Case(
        "node-source-without-source",
        "node construction",
        lambda c: SourceNode("a"),
        PipelineValidationError,
        ("'a'",),
        ("needs source=",),
    ),
    Case(
        "node-query-no-tags",
        "node construction",
        lambda c: QueryNode("q", tags=[]),
        PipelineValidationError,
        ("'q'",),
        ("at least one tag",),
    ),
    Case(
        "node-query-bad-match-mode",
        "node construction",
        lambda c: QueryNode("q", tags=["x"], match_mode="most"),
        PipelineValidationError,
        ("'q'", "'most'"),
        ("'all' or 'any'",),
    ),
    Case(
        "node-query-period-without-interval",
        "node construction",
        lambda c: QueryNode("q", tags=["x"], period="7d"),
        PipelineValidationError,
        ("'q'", "'7d'"),
        ("needs interval=",),
    ),
    Case(
        "node-query-selector-incomplete",
        "node construction",
        lambda c: QueryNode("q", tags=["x"], result_selectors=[{"mode": "random"}]),
        ModelValidationError,
        ("random",),
        ("needs sample_size",),
    ),
    Case(
        "node-query-selector-unknown-key",
        "node construction",
        lambda c: QueryNode(
            "q", tags=["x"], result_selectors=[{"mode": "filter", "filter_meta": {"colour": "red"}}]
        ),
        ModelValidationError,
        ("colour",),
        ("use [",),
    ),
]

RUN_CASES = [
    Case(
        "run-unknown-input",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, inputs={"zzz": 1}),
        MissingInputError,
        ("'zzz'", "'p'"),
        ("nodes are ['a']",),
    ),
    Case(
        "run-ts-not-a-number",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, ts="yesterday"),
        ConfigurationError,
        ("ts", "'yesterday'", "'p'"),
        ("epoch seconds",),
    ),
    Case(
        "run-ts-nan",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, ts=math.nan),
        ConfigurationError,
        ("ts", "nan"),
        ("epoch seconds",),
    ),
    Case(
        "run-timeout-not-positive",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, timeout=-1),
        ConfigurationError,
        ("timeout", "-1"),
        ("positive number of seconds",),
    ),
    Case(
        "run-timeout-not-a-number",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, timeout="soon"),
        ConfigurationError,
        ("timeout", "'soon'"),
        ("positive number of seconds",),
    ),
    Case(
        "run-unknown-engine",
        "run arguments",
        lambda c: _p(Node("a", _one)).execute(engine="warp", state=c.state),
        UnknownBackendError,
        ("engine 'warp'",),
        ("installed: ",),
    ),
    Case(
        "run-known-engine-not-installed",
        "run arguments",
        lambda c: _p(Node("a", _one)).execute(engine="threads", state=c.state),
        UnknownBackendError,
        ("engine 'threads'",),
        ("pip install qmtl-engine-threads",),
    ),
    Case(
        "run-unknown-state",
        "run arguments",
        lambda c: _p(Node("a", _one)).execute(engine="local", state="postgres"),
        UnknownBackendError,
        ("state backend 'postgres'",),
        ("installed: ",),
    ),
    Case(
        "run-unknown-engine-option",
        "run arguments",
        lambda c: _p(Node("a", _one)).execute(
            engine="local", state=c.state, engine_options={"turbo": True}
        ),
        ConfigurationError,
        ("engine 'local'", "turbo"),
        ("not permitted",),
    ),
    Case(
        "history-unknown-node",
        "run arguments",
        lambda c: _p(Node("a", _one)).get_history("zz", state=c.state),
        UnknownNodeError,
        ("'zz'", "'p'"),
        ("it has ['a']",),
    ),
    Case(
        "history-unknown-interval",
        "run arguments",
        lambda c: _p(Node("a", _one)).get_history("a", "2d", state=c.state),
        IntervalError,
        ("'2d'",),
        ("use one of",),
    ),
    Case(
        "history-interval-not-kept",
        "run arguments",
        lambda c: _p(Node("a", _one)).get_history("a", "1h", state=c.state),
        UnknownNodeError,
        ("'a'", "'1h'"),
        ("it has ['1d']",),
    ),
    Case(
        "stream-unknown-source-override",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=[(60.0, 1)])), c, sources={"zz": []}),
        SourceError,
        ("['zz']", "'p'"),
        ("its sources are ['a']",),
    ),
    Case(
        "stream-event-time-nan",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=[(math.nan, 1)])), c),
        SourceError,
        ("source 'a'", "nan"),
        ("finite number",),
    ),
    Case(
        "stream-source-not-iterable",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=5)), c),
        SourceError,
        ("source 'a'", "int"),
        ("iterable of (ts, value) pairs",),
    ),
    Case(
        "stream-events-unknown-source",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=[])), c, events=[("b", 60.0, 1)]),
        SourceError,
        ("'b'",),
        ("its sources are ['a']",),
    ),
    Case(
        "stream-option-misspelt",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=[])), c, timout=5),
        ConfigurationError,
        ("'timout'", "run()", "'p'"),
        ("did you mean 'timeout'",),
    ),
    Case(
        "run-option-misspelt",
        "run arguments",
        lambda c: _run_once(_p(Node("a", _one)), c, timout=5),
        ConfigurationError,
        ("'timout'", "execute()"),
        ("did you mean 'timeout'",),
    ),
    Case(
        "run-engine-not-an-engine",
        "run arguments",
        lambda c: _p(Node("a", _one)).execute(engine=123, state=c.state),
        ConfigurationError,
        ("engine=123",),
        ("a string such as 'local'",),
    ),
    Case(
        "run-mock-unknown-node",
        "run arguments",
        lambda c: _p(Node("price_source", _one)).execute(
            engine="mock", engine_options={"mocks": {"price_sorce": 1}}, state=c.state
        ),
        UnknownNodeError,
        ("'price_sorce'",),
        ("did you mean 'price_source'",),
    ),
    Case(
        "history-count-negative",
        "run arguments",
        lambda c: _p(Node("a", _one)).get_history("a", count=-1, state=c.state),
        ConfigurationError,
        ("count=-1", "get_history()"),
        ("whole number >= 0",),
    ),
    Case(
        "history-count-not-a-number",
        "run arguments",
        lambda c: _p(Node("a", _one)).get_history("a", count="5", state=c.state),
        ConfigurationError,
        ("count='5'",),
        ("whole number >= 0",),
    ),
    Case(
        "stream-source-raises",
        "run arguments",
        lambda c: _stream(_p(SourceNode("a", source=lambda: 1 / 0)), c),
        SourceExecutionError,
        ("Source 'a'", "ZeroDivisionError"),
        ("fix the source",),
    ),
]

SETTINGS_CASES = [
    Case(
        "env-autoload-not-bool",
        "settings and environment",
        lambda c: (_env(c, QMTL_PLUGIN_AUTOLOAD="maybe"), load_settings()),
        ConfigurationError,
        ("plugin_autoload", "QMTL settings"),
        ("valid boolean",),
    ),
    Case(
        "env-engine-options-not-a-mapping",
        "settings and environment",
        lambda c: (_env(c, QMTL_ENGINE__KIND="local", QMTL_ENGINE__OPTIONS="[1]"), load_settings()),
        ConfigurationError,
        ("options",),
        ("valid dictionary",),
    ),
    Case(
        "env-engine-unknown-kind",
        "settings and environment",
        lambda c: (_env(c, QMTL_ENGINE="warp"), _p(Node("a", _one)).execute(state=c.state)),
        UnknownBackendError,
        ("engine 'warp'",),
        ("installed",),
    ),
    Case(
        "env-plugin-option-unknown",
        "settings and environment",
        lambda c: (
            _env(c, QMTL_LOCAL__TURBO="1"),
            _p(Node("a", _one)).execute(engine="local", state=c.state),
        ),
        ConfigurationError,
        ("engine 'local'", "turbo"),
        ("not permitted",),
    ),
    Case(
        "env-redis-url-wrong-scheme",
        "settings and environment",
        lambda c: (
            _env(c, QMTL_REDIS__URL="http://cache:6379/0"),
            _p(Node("a", _one)).execute(engine="local", state="redis"),
        ),
        ConfigurationError,
        ("state backend 'redis'", "http://cache:6379/0"),
        ("redis://, rediss://",),
    ),
    Case(
        "env-redis-option-not-a-number",
        "settings and environment",
        lambda c: (
            _env(c, QMTL_REDIS__MAX_CONNECTIONS="many"),
            _p(Node("a", _one)).execute(engine="local", state="redis"),
        ),
        ConfigurationError,
        ("state backend 'redis'", "max_connections"),
        ("valid integer",),
    ),
    Case(
        "toml-syntax-error",
        "settings and environment",
        lambda c: (
            c.monkeypatch.chdir(c.tmp),
            (c.tmp / "qmtl.toml").write_text("engine = [\n"),
            load_settings(),
        ),
        ConfigurationError,
        ("qmtl.toml",),
        ("fix the TOML syntax",),
    ),
    Case(
        "toml-unknown-key",
        "settings and environment",
        lambda c: (
            c.monkeypatch.chdir(c.tmp),
            (c.tmp / "qmtl.toml").write_text('engin = "kafka"\n'),
            load_settings(),
        ),
        ConfigurationError,
        ("qmtl.toml", "'engin'"),
        ("did you mean 'engine'",),
    ),
    Case(
        "toml-kind-table",
        "settings and environment",
        lambda c: (
            c.monkeypatch.chdir(c.tmp),
            (c.tmp / "qmtl.toml").write_text("[kafka]\nbootstrap_servers = 'x'\n"),
            load_settings(),
        ),
        ConfigurationError,
        ("'kafka'",),
        ('[engine] kind = "kafka"', "[engine.options]"),
    ),
    Case(
        "env-setting-misspelt",
        "settings and environment",
        lambda c: (_env(c, QMTL_ENGIN="kafka"), load_settings()),
        ConfigurationError,
        ("QMTL_ENGIN",),
        ("did you mean QMTL_ENGINE",),
    ),
    Case(
        "toml-wrong-type",
        "settings and environment",
        lambda c: (
            c.monkeypatch.chdir(c.tmp),
            (c.tmp / "qmtl.toml").write_text("engine = 5\n"),
            load_settings(),
        ),
        ConfigurationError,
        ("engine",),
        ("QMTL settings",),
    ),
    Case(
        "kafka-ssl-ca-missing",
        "settings and environment",
        lambda c: _stream_processor(ssl_ca_location=str(c.tmp / "missing-ca.pem")),
        ConfigurationError,
        ("ssl_ca_location", "missing-ca.pem"),
        ("CA",),
    ),
    Case(
        "redis-url-bad-port",
        "settings and environment",
        lambda c: _p(Node("a", _one)).execute(
            engine="local", state="redis", state_options={"url": "redis://:pw@localhost:abc/0"}
        ),
        StateBackendError,
        ("Redis", "Port"),
        ("redis://[:password@]host:6379/0",),
    ),
]


def _plugin_dist(ctx: Ctx, name: str, module_source: str | None, target: str) -> None:
    """A throwaway installed distribution with one ``qmtl`` entry point, on sys.path."""
    root = ctx.tmp / f"site-{name}"
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[qmtl]\n{name} = {target}\n")
    if module_source is not None:
        module = target.partition(":")[0]
        (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    ctx.monkeypatch.syspath_prepend(str(root))
    import importlib

    importlib.invalidate_caches()


def _load_with(ctx: Ctx, name: str, source: str | None, target: str | None = None) -> Any:
    from qmtl.plugins import load_plugins

    module = f"qmtl_case_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    _plugin_dist(ctx, name, source, target or f"{module}")
    return load_plugins()


PLUGIN_CASES = [
    Case(
        "plugin-module-missing",
        "plugin entry points",
        lambda c: _load_with(c, "ghost-plugin", None, "qmtl_no_such_module_xyz"),
        PluginLoadError,
        ("ghost-plugin", "qmtl_no_such_module_xyz"),
        ("QMTL_DISABLE_PLUGINS=ghost-plugin",),
    ),
    Case(
        "plugin-import-raises",
        "plugin entry points",
        lambda c: _load_with(c, "boom-plugin", "raise RuntimeError('half-installed')\n"),
        PluginLoadError,
        ("boom-plugin", "half-installed"),
        ("Reinstall or fix",),
    ),
    Case(
        "plugin-hook-wrong-signature",
        "plugin entry points",
        lambda c: _load_with(
            c,
            "sig-plugin",
            """
             from qmtl import hookimpl
             @hookimpl
             def qmtl_register_engines(registry, extra):
                 pass
         """,
        ),
        PluginLoadError,
        ("sig-plugin",),
        ("QMTL_DISABLE_PLUGINS=sig-plugin",),
    ),
    Case(
        "plugin-hook-misspelt",
        "plugin entry points",
        lambda c: _load_with(
            c,
            "typo-plugin",
            """
             from qmtl import hookimpl
             @hookimpl
             def qmtl_register_engine(registry):
                 pass
         """,
        ),
        PluginLoadError,
        ("typo-plugin", "qmtl_register_engine"),
        ("QMTL_DISABLE_PLUGINS=typo-plugin",),
    ),
    Case(
        "plugin-register-raises",
        "plugin entry points",
        lambda c: _load_with(
            c,
            "reg-plugin",
            """
             from qmtl import hookimpl
             @hookimpl
             def qmtl_register_engines(registry):
                 raise KeyError('missing-config')
         """,
        ),
        PluginLoadError,
        ("reg-plugin", "qmtl_register_engines", "missing-config"),
        (),
    ),
    Case(
        "plugin-kind-registered-twice",
        "plugin entry points",
        lambda c: _load_with(
            c,
            "dup-plugin",
            """
             from qmtl import hookimpl
             @hookimpl
             def qmtl_register_engines(registry):
                 registry.add('local', lambda options: None)
         """,
        ),
        PluginError,
        ("'local'", "dup-plugin"),
        ("QMTL_DISABLE_PLUGINS",),
    ),
    Case(
        "plugin-commands-raise",
        "plugin entry points",
        lambda c: (
            _load_with(
                c,
                "cmd-plugin",
                """
             from qmtl import hookimpl
             @hookimpl
             def qmtl_register_commands(cli):
                 import qmtl_cmd_plugin_missing_module
         """,
            ),
            __import__("qmtl.cli").cli.build_cli(),
        ),
        PluginLoadError,
        ("cmd-plugin", "qmtl_cmd_plugin_missing_module"),
        ("QMTL_DISABLE_PLUGINS=cmd-plugin",),
    ),
    Case(
        "plugin-factory-raises",
        "plugin entry points",
        lambda c: (
            _load_with(
                c,
                "fac-plugin",
                """
             from qmtl import hookimpl
             def _make(options):
                 raise AttributeError('no attribute connect')
             @hookimpl
             def qmtl_register_engines(registry):
                 registry.add('fragile', _make)
         """,
            ),
            _p(Node("a", _one)).execute(engine="fragile", state=c.state),
        ),
        PluginError,
        ("Engine 'fragile'", "fac-plugin", "no attribute connect"),
        (),
    ),
]

CSV_CASES = [
    Case(
        "csv-file-missing",
        "CSV sources",
        lambda c: _csv_run(c, c.tmp / "nope.csv"),
        SourceError,
        ("nope.csv",),
        ("No such file",),
    ),
    Case(
        "csv-no-timestamp-column",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "time,price\n1,2\n")),
        SourceError,
        ("prices.csv", "'timestamp'"),
        ("columns: ['time', 'price']",),
    ),
    Case(
        "csv-no-value-column",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "timestamp,price\n60,2\n"), value_column="close"),
        SourceError,
        ("prices.csv", "'close'"),
        ("columns:",),
    ),
    Case(
        "csv-empty-file",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "")),
        SourceError,
        ("prices.csv", "'timestamp'"),
        ("columns: []",),
    ),
    Case(
        "csv-bad-timestamp",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "timestamp,price\n60,1\nnoon,2\n")),
        SourceError,
        ("prices.csv", "line 3", "'noon'"),
        ("epoch seconds or ISO 8601",),
    ),
    Case(
        "csv-empty-timestamp",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "timestamp,price\n60,1\n,2\n")),
        SourceError,
        ("prices.csv", "line 3"),
        ("timestamp cell is empty",),
    ),
    Case(
        "csv-nan-timestamp",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "timestamp,price\nnan,1\n")),
        SourceError,
        ("prices.csv", "line 2", "'nan'"),
        ("epoch seconds or ISO 8601",),
    ),
    Case(
        "csv-short-row",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, "timestamp,price\n60,1\n120\n"), value_column="price"),
        SourceError,
        ("prices.csv", "line 3", "price"),
        ("column",),
    ),
    Case(
        "csv-not-utf8",
        "CSV sources",
        lambda c: _csv_run(c, _csv(c, b"timestamp,price\n60,\xff\xfe\n")),
        SourceError,
        ("prices.csv",),
        ("encoding",),
    ),
    Case(
        "csv-convert-raises",
        "CSV sources",
        lambda c: _csv_run(
            c, _csv(c, "timestamp,price\n60,x\n"), value_column="price", convert=float
        ),
        SourceError,
        ("prices.csv", "line 2", "'x'"),
        ("convert",),
    ),
    Case(
        "csv-latest-of-empty",
        "CSV sources",
        lambda c: FileSourceProcessor(_csv(c, "timestamp,price\n")).latest(),
        SourceError,
        ("prices.csv",),
        ("has no rows",),
    ),
]

KAFKA_CASES = [
    Case(
        "kafka-not-json",
        "Kafka messages",
        lambda c: _envelope(b"\x00\x01binary"),
        _kafka_error("UndecodableEnvelopeError"),
        ("not UTF-8 JSON",),
        ("byte",),
    ),
    Case(
        "kafka-truncated",
        "Kafka messages",
        lambda c: _envelope(_good_envelope()[:40]),
        _kafka_error("TruncatedEnvelopeError"),
        ("ends in the middle",),
        ("40 bytes",),
    ),
    Case(
        "kafka-tombstone",
        "Kafka messages",
        lambda c: _envelope(None),
        _kafka_error("TruncatedEnvelopeError"),
        ("no value",),
        ("tombstone",),
    ),
    Case(
        "kafka-empty",
        "Kafka messages",
        lambda c: _envelope(b""),
        _kafka_error("TruncatedEnvelopeError"),
        ("0 bytes",),
        (),
    ),
    Case(
        "kafka-oversized",
        "Kafka messages",
        lambda c: _envelope(b'{"v":1,"value":"' + b"x" * 1_000_001 + b'"}'),
        _kafka_error("OversizedEnvelopeError"),
        ("over the limit",),
        ("raise the limit", "max_message_bytes"),
    ),
    Case(
        "kafka-wrong-version",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(v=3)),
        _kafka_error("EnvelopeVersionError"),
        ("version 3",),
        ("upgrade qmtl-engine-kafka",),
    ),
    Case(
        "kafka-json-version-1",
        "Kafka messages",
        lambda c: _envelope(b'{"v": 1, "kind": "event", "pipeline": "p", "node": "n", "ts": 1}'),
        _kafka_error("EnvelopeVersionError"),
        ("version 1 (JSON)",),
        ("upgrade the producer",),
    ),
    Case(
        "kafka-version-not-int",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(v="1")),
        _kafka_error("MalformedEnvelopeError"),
        ("'v'",),
        ("integer",),
    ),
    Case(
        "kafka-json-array",
        "Kafka messages",
        lambda c: _envelope(b"[1, 2]"),
        _kafka_error("MalformedEnvelopeError"),
        ("JSON list",),
        ("envelope object",),
    ),
    Case(
        "kafka-missing-ts",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(ts=...)),
        _kafka_error("MalformedEnvelopeError"),
        ("'ts'",),
        ("event time",),
    ),
    Case(
        "kafka-ts-string",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(ts="now")),
        _kafka_error("MalformedEnvelopeError"),
        ("'ts'", "'now'"),
        ("finite number",),
    ),
    Case(
        "kafka-missing-node",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(node=...)),
        _kafka_error("MalformedEnvelopeError"),
        ("'node'",),
        ("non-empty string",),
    ),
    Case(
        "kafka-unknown-kind",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(kind="snapshot")),
        _kafka_error("MalformedEnvelopeError"),
        ("'kind'", "'snapshot'"),
        ("one of",),
    ),
    Case(
        "kafka-bucket-float",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(bucket=1.5)),
        _kafka_error("MalformedEnvelopeError"),
        ("'bucket'", "1.5"),
        ("integer",),
    ),
    Case(
        "kafka-kind-unhashable",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(kind=["event"])),
        _kafka_error("MalformedEnvelopeError"),
        ("'kind'", "['event']"),
        ("one of",),
    ),
    Case(
        "kafka-value-not-codec-bytes",
        "Kafka messages",
        lambda c: _envelope(_good_envelope(value=b"\xc1")),
        _kafka_error("UndecodableEnvelopeError"),
        ("'value'",),
        ("qmtl.codec.encode",),
    ),
]

CASES = [
    *PIPELINE_CASES,
    *NODE_CASES,
    *RUN_CASES,
    *SETTINGS_CASES,
    *PLUGIN_CASES,
    *CSV_CASES,
    *KAFKA_CASES,
]


def _stored(backend: MemoryStateBackend) -> int:
    return sum(len(series.timestamps) for series in backend._series.values())


def _check(case: Case, error: BaseException) -> None:
    assert isinstance(error, QmtlError), f"{case.id}: {type(error).__name__} is not a QmtlError"
    message = str(error)
    for fragment in (*case.names, *case.fix):
        assert fragment in message, f"{case.id}: {fragment!r} missing from: {message}"


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.id, marks=case.marks) for case in CASES],
)
def test_bad_input_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QMTL_ENGINE", "QMTL_STATE", "QMTL_PLUGIN_AUTOLOAD", "QMTL_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    ctx = Ctx(tmp=tmp_path, state=MemoryStateBackend(), monkeypatch=monkeypatch)
    with pytest.raises(case.error) as caught:
        case.act(ctx)
    _check(case, caught.value)
    if case.category != "CSV sources":
        assert _stored(ctx.state) == 0, f"{case.id}: a failing call wrote history"


def test_catalog_is_large_and_ids_are_unique() -> None:
    ids = (
        [case.id for case in CASES]
        + [case.id for case in CLI_CASES]
        + [case.id for case in REDIS_CASES]
    )
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40


def test_a_bad_csv_row_mid_stream_keeps_only_whole_buckets_before_it(tmp_path: Path) -> None:
    """Nothing half-written: the buckets stored before the bad row are exactly those of the
    good rows, and the error names the row."""
    path = tmp_path / "prices.csv"
    rows = [f"{60 * i + 1},{i}" for i in range(10)] + ["oops,99"] + ["901,1"]
    path.write_text("timestamp,price\n" + "\n".join(rows) + "\n")
    state = MemoryStateBackend()
    pipeline = _p(
        SourceNode(
            "px",
            source=FileSourceProcessor(path, value_column="price"),
            interval_settings={"1m": {"period": 50}},
        ),
        name="csvp",
    )
    with pytest.raises(SourceError, match="line 12"):
        pipeline.run(engine="local", state=state)
    key = pipeline.build().node("px").spec("1m").key
    stored = state.read(key)
    # Row i (i = 0..9) is the event (60 i + 1, i): one per minute bucket [60 i, 60 i + 60), which
    # ends at 60 (i + 1). The last good row (541) moved the watermark to 541, so buckets 0..8
    # (ends 60..540) were final when line 12 failed; bucket 9 (end 600) was still open, and an
    # open bucket is never written. Line 13 (901) is never read.
    assert stored == [{"timestamp": 60.0 * (i + 1), "value": i} for i in range(8, -1, -1)]


# ------------------------------------------------------------------------------------ CLI


@dataclass(frozen=True)
class CliCase:
    id: str
    args: list[str]
    module: str | None
    names: tuple[str, ...]
    fix: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


_GOOD = """
from qmtl.node import Node
from qmtl.pipeline import Pipeline
pipeline = Pipeline("cli")
pipeline.add_node(Node("a", lambda: 1))
not_a_pipeline = 42
def broken_factory():
    raise RuntimeError("factory exploded")
"""

_CYCLE = """
from qmtl.node import Node
from qmtl.pipeline import Pipeline
pipeline = Pipeline("cyc")
pipeline.add_node(Node("a", lambda b: b, upstreams=["b"]))
pipeline.add_node(Node("b", lambda a: a, upstreams=["a"]))
"""

_counter = itertools.count()

CLI_CASES = [
    CliCase(
        "cli-target-without-colon",
        ["run", "strategy"],
        None,
        ("'strategy'",),
        ("module:attribute",),
    ),
    CliCase(
        "cli-module-missing",
        ["run", "qmtl_no_such_strategy:pipeline"],
        None,
        ("qmtl_no_such_strategy",),
        ("cannot import",),
    ),
    CliCase(
        "cli-module-raises-on-import",
        ["run", "{mod}:pipeline"],
        "raise RuntimeError('bad config at import')\n",
        ("{mod}", "bad config at import"),
        ("python -c",),
    ),
    CliCase(
        "cli-attribute-missing",
        ["run", "{mod}:nothing"],
        _GOOD,
        ("'nothing'", "{mod}"),
        ("has no attribute",),
    ),
    CliCase(
        "cli-not-a-pipeline",
        ["run", "{mod}:not_a_pipeline"],
        _GOOD,
        ("int",),
        ("not a qmtl Pipeline",),
    ),
    CliCase(
        "cli-factory-raises",
        ["run", "{mod}:broken_factory"],
        _GOOD,
        ("broken_factory", "factory exploded"),
        (),
    ),
    CliCase(
        "cli-pipeline-invalid", ["run", "{mod}:pipeline"], _CYCLE, ("a -> b",), ("remove one",)
    ),
    CliCase(
        "cli-unknown-engine",
        ["run", "{mod}:pipeline", "--engine", "warp"],
        _GOOD,
        ("engine 'warp'",),
        ("installed",),
    ),
    CliCase(
        "cli-ts-not-a-number",
        ["run", "{mod}:pipeline", "--ts", "noon"],
        _GOOD,
        ("'noon'", "--ts"),
        ("float",),
    ),
    CliCase(
        "cli-history-unknown-node",
        ["history", "{mod}:pipeline", "zz"],
        _GOOD,
        ("'zz'",),
        ("it has ['a']",),
    ),
    CliCase(
        "cli-history-bad-interval",
        ["history", "{mod}:pipeline", "a", "--interval", "2d"],
        _GOOD,
        ("'2d'",),
        ("use one of",),
    ),
    CliCase(
        "cli-log-level-unknown",
        ["--log-level", "loud", "plugins"],
        None,
        ("'loud'",),
        ("'debug', 'info', 'warning', 'error'",),
    ),
    CliCase(
        "cli-history-memory-state",
        ["history", "{mod}:pipeline", "a"],
        _GOOD,
        ("state backend 'memory'", "node 'a'"),
        ("--state redis",),
    ),
    CliCase(
        "cli-target-file-missing",
        ["run", "./no_such_strategy.py:pipeline"],
        None,
        ("no_such_strategy.py",),
        ("does not exist",),
    ),
    CliCase(
        "cli-k8s-bad-quantity",
        ["deploy", "k8s", "job", "--pipeline-name", "p", "--image", "a:1", "--request", "cpu=lots"],
        None,
        ("cpu='lots'",),
        ("not a Kubernetes quantity",),
    ),
    CliCase(
        "cli-k8s-unbalanced-command",
        ["deploy", "k8s", "job", "--pipeline-name", "p", "--image", "a:1", "--command", "a 'b"],
        None,
        ('"a \'b"',),
        ("balance its quotes",),
    ),
    CliCase(
        "cli-env-autoload-invalid",
        ["plugins"],
        None,
        ("plugin_autoload",),
        ("valid boolean",),
        (("QMTL_PLUGIN_AUTOLOAD", "maybe"),),
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_cli_bad_input(
    case: CliCase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from qmtl.cli import main

    for name in ("QMTL_ENGINE", "QMTL_STATE", "QMTL_PLUGIN_AUTOLOAD", "QMTL_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    module = f"qmtl_cli_case_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    if case.module is not None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(case.module))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [arg.replace("{mod}", module) for arg in case.args]
    import structlog

    saved = structlog.get_config()  # the CLI configures logging for the process: restore it
    try:
        with pytest.raises(SystemExit) as exited:  # anything else escaping is a traceback
            main(args)
    finally:
        structlog.configure(**saved)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert exited.value.code in (1, 2), (exited.value.code, output)
    assert "Traceback" not in output
    assert "rror: " in captured.err  # click's "Error: ..." or qmtl's "error: ..."
    for fragment in (*case.names, *case.fix):
        fragment = fragment.replace("{mod}", module)
        assert fragment in output, f"{case.id}: {fragment!r} missing from: {output}"
    sys.modules.pop(module, None)


# ---------------------------------------------------------------------------------- Redis


def _redis_backend(url: str) -> Any:
    from qmtl_state_redis.backend import RedisStateBackend

    return RedisStateBackend(url)


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


@dataclass(frozen=True)
class RedisCase:
    id: str
    setup: Callable[[Any, SeriesKey, str, str], None]  # (client, key, history, meta)
    act: Callable[[Any, SeriesKey], Any]  # (backend, key)
    names: tuple[str, ...]
    fix: tuple[str, ...]
    untouched: bool = True  # the foreign keys are left exactly as they were
    marks: tuple[Any, ...] = ()


def _write(backend: Any, key: SeriesKey) -> None:
    backend.write(key, 60.0, {"v": 1}, max_items=10, ttl=600)


REDIS_CASES = [
    RedisCase(
        "redis-history-is-a-string",
        lambda r, k, h, m: r.set(h, "not ours"),
        lambda b, k: b.read(k),
        ("history",),
        ("not used by something else",),
    ),
    RedisCase(
        "redis-member-not-json",
        lambda r, k, h, m: r.zadd(h, {b"60.0 {oops": 60}),
        lambda b, k: b.read(k),
        ("history",),
        ("did not write", "delete the key"),
    ),
    RedisCase(
        "redis-member-not-codec",
        lambda r, k, h, m: r.zadd(h, {b"60.0;\xc1": 60}),
        lambda b, k: b.read(k),
        ("history",),
        ("did not write", "delete the key"),
    ),
    RedisCase(
        "redis-member-without-timestamp",
        lambda r, k, h, m: r.zadd(h, {b"plain": 60}),
        lambda b, k: b.read(k),
        ("history",),
        ("did not write",),
    ),
    RedisCase(
        "redis-meta-is-a-list",
        lambda r, k, h, m: r.rpush(m, "x"),
        lambda b, k: b.metadata(k),
        ("meta",),
        ("not used by something else",),
    ),
    RedisCase(
        "redis-meta-garbage-numbers",
        lambda r, k, h, m: (
            r.zadd(h, {b"60.0 1": 60}),
            r.hset(m, mapping={"max_items": "lots", "ttl": "x"}),
        ),
        lambda b, k: b.metadata(k),
        ("meta",),
        ("did not write",),
    ),
    RedisCase(
        "redis-write-over-foreign-history",
        lambda r, k, h, m: r.set(h, "not ours"),
        _write,
        ("history",),
        ("not used by something else",),
    ),
    RedisCase(
        "redis-write-over-foreign-meta",
        lambda r, k, h, m: r.set(m, "not ours"),
        _write,
        ("meta",),
        ("not used by something else",),
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in REDIS_CASES])
def test_redis_foreign_contents(case: RedisCase, redis_url: str) -> None:
    from qmtl_state_redis.backend import _keys

    pipeline = f"bad-{uuid.uuid4().hex[:8]}"
    key = SeriesKey(pipeline, "node1", "1m")
    history, meta = _keys(key)
    client = _redis_client(redis_url)
    backend = _redis_backend(redis_url)
    try:
        case.setup(client, key, history, meta)
        before = {name: client.dump(name) for name in (history, meta)}
        with pytest.raises(QmtlError) as caught:
            case.act(backend, key)
        error = caught.value
        assert isinstance(error, StateBackendError), type(error)
        message = str(error)
        for fragment in (*case.names, *case.fix):
            assert fragment in message, f"{case.id}: {fragment!r} missing from {message}"
        assert pipeline in message  # the key is named
        if case.untouched:
            after = {name: client.dump(name) for name in (history, meta)}
            assert after == before, f"{case.id}: a failing call changed the keys"
    finally:
        backend.close()
        for name in client.scan_iter(match=f"qmtl:{pipeline}:*"):
            client.delete(name)
        client.close()


# ------------------------------------------------------------------ Kafka dead-letter records


@pytest.mark.integration
def test_oversized_and_future_version_messages_become_dead_letters(kafka_bootstrap: str) -> None:
    """Stream data never raises at the user: an oversized message and a v2 envelope each become
    one dead-letter record with its reason, and the good message between them is delivered."""
    from confluent_kafka import Consumer

    from qmtl_engine_kafka import (
        KafkaEngineSettings,
        StreamProcessor,
        TopicManager,
        dead_letter_headers,
    )

    unique = uuid.uuid4().hex[:8]
    topic, dlq = f"bad-input-{unique}", f"bad-input-dlq-{unique}"
    settings = KafkaEngineSettings(bootstrap_servers=kafka_bootstrap, max_message_bytes=2048)
    TopicManager(settings).create_topics([topic, dlq])
    with StreamProcessor(settings, dead_letter_topic=dlq) as sp:
        sp.publish(
            topic, b'{"v":1,"pipeline":"p","node":"n","ts":1,"value":"' + b"x" * 4096 + b'"}'
        )
        sp.publish(topic, _good_envelope(pipeline="p", node="n"))
        sp.publish(topic, _good_envelope(v=3))
        sp.subscribe([topic])
        events: list[Any] = []
        for _ in range(40):
            event = sp.consume(1.0)
            if event is not None:
                events.append(event)
            if sp.dead_letters.count == 2 and events:
                break
        assert [e["value"] for e in events] == [1.5]
        assert sp.dead_letters.reasons == {"oversized": 1, "unsupported_version": 1}
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"chk-{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    letters = []
    try:
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                letters.append(message)
            if len(letters) == 2:
                break
    finally:
        consumer.close()
    reasons = [dead_letter_headers(m)["qmtl.dlq.reason"] for m in letters]
    assert reasons == ["oversized", "unsupported_version"]
    assert "upgrade qmtl-engine-kafka" in dead_letter_headers(letters[1])["qmtl.dlq.error"]
    assert dead_letter_headers(letters[0])["qmtl.dlq.topic"] == topic


@pytest.mark.integration
def test_kafka_max_poll_interval_below_the_session_timeout_is_a_configuration_error(
    kafka_bootstrap: str,
) -> None:
    pipeline = _p(SourceNode("s", source=[(60.0, 1.0)]), name=f"maxpoll-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigurationError, match="max_poll_interval_s") as caught:
        pipeline.run(
            engine="kafka",
            state=MemoryStateBackend(),
            engine_options={
                "bootstrap_servers": kafka_bootstrap,
                "max_poll_interval_s": 5,
                "connect_timeout_s": 10,
            },
        )
    assert "session_timeout_s" in str(caught.value)
