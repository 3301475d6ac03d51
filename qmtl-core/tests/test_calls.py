"""How a node's function receives its upstream values.

By name when its parameters are named after the upstreams (any order), by position otherwise;
the names are mapped to positions once, when the node is built, so every engine calls the
function positionally where Python's binding is the same. Each case's expected value is written
out by hand: it is what Python gives for that call by name (or by position).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qmtl import Node, Pipeline, SourceNode
from qmtl.calls import _from_code, _from_signature, call_style
from qmtl.errors import UnbindableFunctionError
from qmtl.streaming import OutputEvent

VALUES = {"a": 1, "b": 2, "c": 3}


def in_order(a: int, b: int) -> tuple[Any, ...]:
    return ("a", a, "b", b)


def reversed_(b: int, a: int) -> tuple[Any, ...]:
    return ("a", a, "b", b)


def rotated(c: int, a: int, b: int) -> tuple[Any, ...]:
    return ("a", a, "b", b, "c", c)


def with_param(a: int, b: int, scale: int = 1) -> tuple[Any, ...]:
    return ("a", a, "b", b, "scale", scale)


def reversed_keyword_only_param(b: int, a: int, *, scale: int) -> tuple[Any, ...]:
    return ("a", a, "b", b, "scale", scale)


def keyword_only_upstream(a: int, *, b: int) -> tuple[Any, ...]:
    return ("a", a, "b", b)


def catch_all(**values: int) -> tuple[Any, ...]:
    return tuple(sorted(values.items()))


def one_named_rest_caught(a: int, **rest: int) -> tuple[Any, ...]:
    return ("a", a, "rest", tuple(sorted(rest.items())))


def positional(x: int, y: int) -> tuple[Any, ...]:
    return ("x", x, "y", y)


def star(*xs: int) -> tuple[Any, ...]:
    return xs


def with_default(a: int, b: int, c: int = 30) -> tuple[Any, ...]:
    return ("a", a, "b", b, "c", c)


CASES: list[tuple[Callable[..., Any], list[str], dict[str, Any], tuple[Any, ...]]] = [
    (in_order, ["a", "b"], {}, ("a", 1, "b", 2)),
    (reversed_, ["a", "b"], {}, ("a", 1, "b", 2)),
    (rotated, ["a", "b", "c"], {}, ("a", 1, "b", 2, "c", 3)),
    (with_param, ["a", "b"], {"scale": 10}, ("a", 1, "b", 2, "scale", 10)),
    (reversed_keyword_only_param, ["a", "b"], {"scale": 5}, ("a", 1, "b", 2, "scale", 5)),
    (keyword_only_upstream, ["a", "b"], {}, ("a", 1, "b", 2)),
    (catch_all, ["b", "a"], {}, (("a", 1), ("b", 2))),
    (one_named_rest_caught, ["a", "b", "c"], {}, ("a", 1, "rest", (("b", 2), ("c", 3)))),
    (positional, ["b", "a"], {}, ("x", 2, "y", 1)),
    (star, ["c", "a", "b"], {}, (3, 1, 2)),
    (with_default, ["a", "b"], {}, ("a", 1, "b", 2, "c", 30)),
]
IDS = [case[0].__name__ for case in CASES]


def pipeline_of(fn: Callable[..., Any], upstreams: list[str], params: dict[str, Any]) -> Pipeline:
    pipeline = Pipeline("calls")
    for name in upstreams:
        value = VALUES[name]
        pipeline.add_node(SourceNode(name, source=[(0, value)]))
    pipeline.add_node(Node("out", fn=fn, upstreams=upstreams, **params))
    return pipeline


@pytest.mark.parametrize(("fn", "upstreams", "params", "expected"), CASES, ids=IDS)
def test_every_way_of_calling_a_node_binds_like_python(
    fn: Callable[..., Any], upstreams: list[str], params: dict[str, Any], expected: Any
) -> None:
    node = Node("out", fn=fn, upstreams=upstreams, **params)
    assert node.execute({name: VALUES[name] for name in upstreams}) == expected

    pipeline = pipeline_of(fn, upstreams, params)
    planned = pipeline.build().node("out")
    values = [VALUES[name] for name in upstreams]
    assert planned.invoke(values) == expected
    assert planned.call(*values) == expected
    assert pipeline.execute(ts=0)["out"] == expected

    bars: list[OutputEvent] = []
    pipeline.run(on_output=bars.append)
    assert [bar.value for bar in bars if bar.node == "out"] == [expected]


def test_by_name_in_parameter_order_calls_the_function_itself() -> None:
    """Nothing stands between an engine and the function: no dict, no wrapper per call."""
    pipeline = pipeline_of(in_order, ["a", "b"], {})
    assert pipeline.build().node("out").call is in_order


def test_replacing_invoke_replaces_call() -> None:
    """An engine or the Analyzer may swap a plan node's invoke; call follows it."""
    planned = pipeline_of(reversed_, ["a", "b"], {}).build().node("out")
    swapped = dataclasses.replace(planned, invoke=lambda values: ("swapped", *values))
    assert swapped.call(1, 2) == ("swapped", 1, 2)


# -- the code-object fast path agrees with inspect.signature ----------------------------------
POOL = ["a", "b", "c", "d", "e"]


@st.composite
def functions_and_calls(draw: Any) -> tuple[str, list[str], dict[str, int]]:
    """A random signature (positional-only, positional-or-keyword, *args, keyword-only,
    **kwargs, defaults) as source text, and random upstream and param names."""
    names = draw(st.permutations(POOL))
    sizes = [draw(st.integers(0, 2)), draw(st.integers(0, 3)), draw(st.integers(0, 2))]
    posonly, poskw, kwonly = (
        names[: sizes[0]],
        names[sizes[0] : sizes[0] + sizes[1]],
        names[sizes[0] + sizes[1] : sum(sizes)],
    )
    positional = [*posonly, *poskw]
    defaults_from = draw(st.integers(0, len(positional)))
    parts = [f"{n}=0" if i >= defaults_from else n for i, n in enumerate(positional)]
    if posonly:
        parts.insert(len(posonly), "/")
    star = draw(st.booleans())
    if star or kwonly:
        parts.append("*args" if star else "*")
    parts += [f"{n}=0" if draw(st.booleans()) else n for n in kwonly]
    if draw(st.booleans()):
        parts.append("**kw")
    upstreams = draw(st.lists(st.sampled_from([*POOL, "z", "args"]), unique=True, max_size=3))
    params = draw(st.lists(st.sampled_from([*POOL, "y", "kw"]), unique=True, max_size=2))
    return f"def f({', '.join(parts)}):\n    return 0\n", upstreams, dict.fromkeys(params, 1)


def _python_calls(fn: Any, style: str, upstreams: list[str], params: dict[str, int]) -> bool:
    """Whether Python itself takes the call ``style`` makes: the judge where
    ``Signature.bind`` is wrong (a positional-only name passed by keyword into ``**kw`` is
    refused before 3.13, and accepted even when the parameter is then missing from 3.13)."""
    try:
        if style == "keyword":
            fn(**dict.fromkeys(upstreams), **params)
        else:
            fn(*[None] * len(upstreams), **params)
    except TypeError:
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(functions_and_calls())
@example(("def f(a=0, /, **kw):\n    return 0\n", [], {"a": 1}))  # a keyword a goes into **kw
@example(("def f(a, /, **kw):\n    return 0\n", [], {"a": 1}))  # ... and a stays unfilled
def test_reading_the_code_object_decides_like_inspect_signature(
    case: tuple[str, list[str], dict[str, int]],
) -> None:
    source, upstreams, params = case
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    fn = namespace["f"]
    fast = _from_code(fn, upstreams, params)
    try:
        slow = _from_signature("n", fn, upstreams, params)
    except UnbindableFunctionError:
        slow = None
    if fast is not None:
        assert _python_calls(fn, fast[0], upstreams, params), source
    if fast is not None and slow is not None:
        assert fast == slow, source
    elif slow is not None:  # refused by the fast path alone: Python must refuse the call too
        assert not _python_calls(fn, slow[0], upstreams, params), source


def test_wrapped_functions_and_other_callables_go_through_inspect() -> None:
    @functools.wraps(in_order)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return in_order(*args, **kwargs)

    assert _from_code(wrapper, ["a", "b"], {}) is None  # inspect follows __wrapped__
    assert call_style("n", wrapper, ["a", "b"], {}) == ("keyword", (0, 1))
    assert _from_code(functools.partial(with_param, scale=2), ["a", "b"], {}) is None
