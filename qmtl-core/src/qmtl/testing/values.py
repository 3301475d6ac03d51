"""Value parity cases (SPEC §5.4): what every engine and state backend must carry unchanged,
and what each must refuse, with expectations written by hand.

Every factory is module level (``qmtl.testing.values:value_types``), so a distributed engine's
workers can rebuild the pipeline from code. :data:`VALUE_CASES` are the streaming cases of the
engine contract, :data:`ONESHOT_CASES` its one-shot cases; :data:`ROUND_TRIPS` and
:data:`REFUSED` serve the state-backend contract. :func:`same` is the comparison: equal type at
every depth and equal value, ``NaN`` equal to ``NaN``.

The numpy cases are generated only where numpy is installed (it is not a dependency of
qmtl-core); QMTL's own test environment has it, so they always run there.
"""

from __future__ import annotations

import collections
import enum
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline

HAS_NUMPY = importlib.util.find_spec("numpy") is not None

#: A day-aligned epoch second (2023-11-15T00:00:00Z).
BASE = 1_700_006_400
_MINUTE = {"1m": {"interval": "1m", "period": 30, "max_history": 100}}
_NEW_YORK = timezone(timedelta(hours=-5), "EST")


def same(a: Any, b: Any) -> bool:
    """Equal in type and value at every depth (``NaN`` equals ``NaN``; arrays by dtype, shape
    and elements); an oracle independent of :mod:`qmtl.codec`."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a).__module__ == "numpy":
        import numpy as np

        if isinstance(a, np.ndarray):
            nan = a.dtype.kind in "fc"
            return bool(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, nan))
        return bool(a.dtype == b.dtype and (a == b or (a != a and b != b)))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, datetime):
        return bool(a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset())
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


# -- what round-trips ---------------------------------------------------------------------------
def _stamps() -> list[tuple[float, datetime]]:
    """One event a minute; the value is a wall-clock time in New York (UTC-5)."""
    return [
        (BASE + 60 * i + 1, datetime(2024, 1, 5, 9 + i, 30, tzinfo=_NEW_YORK)) for i in range(3)
    ]


def _quotes() -> list[tuple[float, dict[str, Any]]]:
    return [
        (BASE + 1, {"px": math.nan, "size": 3}),
        (BASE + 61, {"px": 101.5, "size": 0}),
        (BASE + 121, {"px": math.inf, "size": -1}),
    ]


def _pairs() -> list[tuple[float, tuple[int, int]]]:
    return [(BASE + 1, (1, 2)), (BASE + 61, (2, 1)), (BASE + 121, (1, 2))]


def _misc() -> list[tuple[float, Any]]:
    return [
        (BASE + 1, [None, True, 2**70, -0.0, b"\x00\xff", date(2024, 2, 29)]),
        (BASE + 61, {"deep": [(math.nan, -math.inf), {"d": Decimal("1.10")}]}),
        (BASE + 121, datetime(2024, 1, 5, 14, 30)),  # naive stays naive
    ]


def value_types() -> Pipeline:
    """Sources whose events carry the listed types, and the issue's downstream readers."""
    p = Pipeline("contract-values")
    p.add_node(SourceNode("stamp", source=_stamps(), interval_settings=_MINUTE))
    p.add_node(SourceNode("quote", source=_quotes(), interval_settings=_MINUTE))
    p.add_node(SourceNode("pair", source=_pairs(), interval_settings=_MINUTE))
    p.add_node(SourceNode("misc", source=_misc(), interval_settings=_MINUTE))
    p.add_node(Node("hour", fn=_hour, upstreams=["stamp"], interval_settings=_MINUTE))
    p.add_node(Node("px_is_nan", fn=_px_is_nan, upstreams=["quote"], interval_settings=_MINUTE))
    p.add_node(Node("is_one_two", fn=_is_one_two, upstreams=["pair"], interval_settings=_MINUTE))
    p.add_node(Node("echo", fn=_echo, upstreams=["misc"], interval_settings=_MINUTE))
    p.add_node(Node("price", fn=_price, upstreams=["quote"], interval_settings=_MINUTE))
    return p


def _hour(stamp: datetime) -> int:
    return stamp.hour  # on the JSON envelope the datetime arrived as a string: no .hour


def _px_is_nan(quote: dict[str, Any]) -> bool:
    return math.isnan(quote["px"])  # on JSON, NaN arrived as None: math.isnan(None) raised


def _is_one_two(pair: tuple[int, int]) -> bool:
    return pair == (1, 2)  # on JSON, a tuple arrived as a list: [1, 2] == (1, 2) is False


def _echo(misc: Any) -> Any:
    return misc


def _price(quote: dict[str, Any]) -> dict[str, Any]:
    return {"px": quote["px"], "at": (quote["size"], Decimal(quote["size"]) / 4)}


def numpy_values() -> Pipeline:
    """numpy arrays and scalars: ``np.array([a, a]) * 2`` doubles values (on JSON it repeated a
    list)."""
    import numpy as np

    p = Pipeline("contract-numpy")
    vectors = [(BASE + 60 * i + 1, np.array([1.0 + i, 2.5], dtype="float32")) for i in range(3)]
    p.add_node(SourceNode("vec", source=vectors, interval_settings=_MINUTE))
    p.add_node(
        SourceNode(
            "tick",
            source=[(BASE + 1, np.int64(7)), (BASE + 61, np.float64(math.nan))],
            interval_settings=_MINUTE,
        )
    )
    p.add_node(Node("doubled", fn=_doubled, upstreams=["vec"], interval_settings=_MINUTE))
    p.add_node(Node("tick_echo", fn=_echo, upstreams=["tick"], interval_settings=_MINUTE))
    return p


def _doubled(vec: Any) -> Any:
    import numpy as np

    return np.array([vec, vec]) * 2


_H = BASE + 60  # end of the first bucket
#: Hand-written outputs per ``(node, interval)`` series: ``[(bucket end, value), ...]``.
EXPECTED: dict[str, dict[tuple[str, str], list[tuple[float, Any]]]] = {
    "value_types": {
        ("stamp", "1m"): [
            (_H, datetime(2024, 1, 5, 9, 30, tzinfo=_NEW_YORK)),
            (_H + 60, datetime(2024, 1, 5, 10, 30, tzinfo=_NEW_YORK)),
            (_H + 120, datetime(2024, 1, 5, 11, 30, tzinfo=_NEW_YORK)),
        ],
        ("hour", "1m"): [(_H, 9), (_H + 60, 10), (_H + 120, 11)],
        ("quote", "1m"): [
            (_H, {"px": math.nan, "size": 3}),
            (_H + 60, {"px": 101.5, "size": 0}),
            (_H + 120, {"px": math.inf, "size": -1}),
        ],
        ("px_is_nan", "1m"): [(_H, True), (_H + 60, False), (_H + 120, False)],
        ("price", "1m"): [
            (_H, {"px": math.nan, "at": (3, Decimal("0.75"))}),
            (_H + 60, {"px": 101.5, "at": (0, Decimal("0"))}),
            (_H + 120, {"px": math.inf, "at": (-1, Decimal("-0.25"))}),
        ],
        ("pair", "1m"): [(_H, (1, 2)), (_H + 60, (2, 1)), (_H + 120, (1, 2))],
        ("is_one_two", "1m"): [(_H, True), (_H + 60, False), (_H + 120, True)],
        ("misc", "1m"): [
            (_H, [None, True, 1180591620717411303424, -0.0, b"\x00\xff", date(2024, 2, 29)]),
            (_H + 60, {"deep": [(math.nan, -math.inf), {"d": Decimal("1.10")}]}),
            (_H + 120, datetime(2024, 1, 5, 14, 30)),
        ],
        ("echo", "1m"): [
            (_H, [None, True, 1180591620717411303424, -0.0, b"\x00\xff", date(2024, 2, 29)]),
            (_H + 60, {"deep": [(math.nan, -math.inf), {"d": Decimal("1.10")}]}),
            (_H + 120, datetime(2024, 1, 5, 14, 30)),
        ],
    },
}


def _numpy_expected() -> dict[tuple[str, str], list[tuple[float, Any]]]:
    import numpy as np

    f4 = np.float32
    return {
        ("vec", "1m"): [
            (_H, np.array([1.0, 2.5], dtype=f4)),
            (_H + 60, np.array([2.0, 2.5], dtype=f4)),
            (_H + 120, np.array([3.0, 2.5], dtype=f4)),
        ],
        ("doubled", "1m"): [
            (_H, np.array([[2.0, 5.0], [2.0, 5.0]], dtype=f4)),
            (_H + 60, np.array([[4.0, 5.0], [4.0, 5.0]], dtype=f4)),
            (_H + 120, np.array([[6.0, 5.0], [6.0, 5.0]], dtype=f4)),
        ],
        ("tick", "1m"): [(_H, np.int64(7)), (_H + 60, np.float64(math.nan))],
        ("tick_echo", "1m"): [(_H, np.int64(7)), (_H + 60, np.float64(math.nan))],
    }


def expected(name: str) -> dict[tuple[str, str], list[tuple[float, Any]]]:
    """The hand-written outputs of value case ``name``."""
    return _numpy_expected() if name == "numpy_values" else EXPECTED[name]


# -- what is refused ----------------------------------------------------------------------------
class Opaque:
    """A user object no codec can carry without code execution."""

    def __repr__(self) -> str:
        return "Opaque()"


class Quote(NamedTuple):
    bid: float
    ask: float


class Side(enum.IntEnum):
    BUY = 1


_BAD: dict[str, Callable[[], Any]] = {
    "set": lambda: {1.0, 2.0},
    "Opaque": Opaque,
    "collections.OrderedDict": lambda: collections.OrderedDict(px=1.0),
    "Quote": lambda: Quote(1.0, 1.5),
    "Side": lambda: Side.BUY,
    "int key": lambda: {1: "a"},
}


def _counter() -> list[tuple[float, float]]:
    return [(BASE + 60 * i + 1, float(i)) for i in range(6)]


def _refusing(name: str, kind: str) -> Pipeline:
    """``refuse`` returns its input for counters 0 and 1, then a ``kind`` value at counter 2."""
    bad = _BAD[kind]
    p = Pipeline(f"contract-refuse-{name}")
    p.add_node(SourceNode("counter", source=_counter(), interval_settings=_MINUTE))
    p.add_node(
        Node(
            "refuse",
            fn=lambda counter: counter if counter < 2 else bad(),
            upstreams=["counter"],
            interval_settings=_MINUTE,
        )
    )
    return p


def refuse_set() -> Pipeline:
    return _refusing("set", "set")


def refuse_object() -> Pipeline:
    return _refusing("object", "Opaque")


def refuse_ordered_dict() -> Pipeline:
    return _refusing("ordered-dict", "collections.OrderedDict")


def refuse_namedtuple() -> Pipeline:
    return _refusing("namedtuple", "Quote")


def refuse_int_enum() -> Pipeline:
    return _refusing("int-enum", "Side")


def refuse_int_keys() -> Pipeline:
    return _refusing("int-keys", "int key")


def refuse_source_set() -> Pipeline:
    """A source whose third event carries a set: refused at the source."""
    p = Pipeline("contract-refuse-source")
    events: list[tuple[float, Any]] = [(BASE + 1, 1.0), (BASE + 61, 2.0), (BASE + 121, {3.0})]
    p.add_node(SourceNode("feed", source=events, interval_settings=_MINUTE))
    p.add_node(
        Node("twice", fn=lambda feed: feed * 2, upstreams=["feed"], interval_settings=_MINUTE)
    )
    return p


@dataclass(frozen=True)
class ValueCase:
    """A value case: ``build()`` gives a fresh pipeline; a refusal case names the node that
    returns the refused value (``fails``) and what the error says about its type (``shows``)."""

    name: str
    build: Callable[[], Pipeline]
    fails: str | None = None
    shows: str | None = None

    @property
    def target(self) -> str:
        return f"{__name__}:{self.build.__name__}"


_PASSING = [ValueCase("value_types", value_types)]
if HAS_NUMPY:
    _PASSING.append(ValueCase("numpy_values", numpy_values))

#: The streaming value cases of the engine contract, by name.
VALUE_CASES: dict[str, ValueCase] = {
    case.name: case
    for case in [
        *_PASSING,
        ValueCase("refuse_set", refuse_set, "refuse", "value: set"),
        ValueCase("refuse_object", refuse_object, "refuse", f"value: {__name__}.Opaque"),
        ValueCase(
            "refuse_ordered_dict",
            refuse_ordered_dict,
            "refuse",
            "value: collections.OrderedDict",
        ),
        ValueCase("refuse_namedtuple", refuse_namedtuple, "refuse", f"value: {__name__}.Quote"),
        ValueCase("refuse_int_enum", refuse_int_enum, "refuse", f"value: {__name__}.Side"),
        ValueCase("refuse_int_keys", refuse_int_keys, "refuse", "a dict with a int key"),
        ValueCase("refuse_source_set", refuse_source_set, "feed", "value: set"),
    ]
}
VALUE_PASSING = [case.name for case in _PASSING]
VALUE_REFUSED = [name for name, case in VALUE_CASES.items() if case.fails is not None]


# -- one-shot -----------------------------------------------------------------------------------
def oneshot_values() -> Pipeline:
    """One-shot: a source returning a datetime and a tuple; readers of ``.hour`` and ``==``."""
    p = Pipeline("contract-oneshot-values")
    p.add_node(Node("when", fn=_when, interval_settings=_MINUTE))
    p.add_node(
        Node("hour", fn=lambda when: when["at"].hour, upstreams=["when"], interval_settings=_MINUTE)
    )
    p.add_node(
        Node(
            "pair",
            fn=lambda when: when["pair"] == (1, 2),
            upstreams=["when"],
            interval_settings=_MINUTE,
        )
    )
    return p


def _when() -> dict[str, Any]:
    return {"at": datetime(2024, 1, 5, 16, tzinfo=UTC), "pair": (1, 2), "px": math.nan}


ONESHOT_EXPECTED: dict[str, Any] = {
    "when": {"at": datetime(2024, 1, 5, 16, tzinfo=UTC), "pair": (1, 2), "px": math.nan},
    "hour": 16,
    "pair": True,
}


def oneshot_refuse() -> Pipeline:
    """One-shot: ``bad`` returns a set; ``after`` reads it (never runs)."""
    p = Pipeline("contract-oneshot-refuse")
    p.add_node(Node("price", fn=lambda: 101.5, interval_settings=_MINUTE))
    p.add_node(
        Node("bad", fn=lambda price: {price}, upstreams=["price"], interval_settings=_MINUTE)
    )
    p.add_node(Node("after", fn=lambda bad: len(bad), upstreams=["bad"], interval_settings=_MINUTE))
    return p


# -- the state-backend contract's values ----------------------------------------------------------
#: Values a state backend must return as themselves (numpy ones where numpy is installed).
ROUND_TRIPS: list[Any] = [
    None,
    True,
    2**64,
    -(2**70),
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    "한글",
    b"\x00\xff",
    (1, (2.0, "x")),
    [(), [math.nan]],
    {"px": math.nan, "at": datetime(2024, 1, 5, 9, 30, tzinfo=_NEW_YORK)},
    datetime(2024, 1, 5, 9, 30),
    date(2024, 2, 29),
    Decimal("-1.10"),
]
#: Values a state backend must refuse with ValueEncodeError, and what the error shows.
REFUSED: list[tuple[Any, str]] = [
    ({1, 2}, "value: set"),
    (Opaque(), f"value: {__name__}.Opaque"),
    (collections.OrderedDict(a=1), "value: collections.OrderedDict"),
    (Quote(1.0, 2.0), f"value: {__name__}.Quote"),
    (Side.BUY, f"value: {__name__}.Side"),
    ({1: "a"}, "a dict with a int key"),
    ({"px": [1.0, {2.0}]}, "value['px'][1]: set"),
]


def numpy_round_trips() -> list[Any]:
    """numpy values a state backend must return as themselves (needs numpy)."""
    import numpy as np

    return [
        np.array([[1, 2], [3, 4]], dtype=">i4"),
        np.array([math.nan, 1.5]),
        np.float64(2.5),
        np.datetime64("2024-01-05T09:30", "s"),
    ]


__all__ = [
    "EXPECTED",
    "HAS_NUMPY",
    "ONESHOT_EXPECTED",
    "REFUSED",
    "ROUND_TRIPS",
    "VALUE_CASES",
    "VALUE_PASSING",
    "VALUE_REFUSED",
    "ValueCase",
    "expected",
    "numpy_round_trips",
    "oneshot_refuse",
    "oneshot_values",
    "same",
]
