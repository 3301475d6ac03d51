"""The value codec (SPEC §5.4): listed types come back as themselves, anything else is refused."""

from __future__ import annotations

import collections
import enum
import math
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmtl import codec
from qmtl.errors import QmtlError, ValueDecodeError, ValueEncodeError
from qmtl.extras import MissingExtraError


def same(a: Any, b: Any) -> bool:
    """Equal in type and value at every depth, NaN equal to NaN (an independent oracle)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (a != a and b != b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, datetime):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and repr(a) == repr(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,  # the largest msgpack int
    2**64,  # beyond 64 bits: carried as bytes
    -(2**63) - 1,
    3**200,
    -(3**200),
    1.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "héllo",
    b"\x00\xff",
    [],
    (),
    (1,),
    [1, (2, 3), [4, (5,)]],
    ((), ((),)),
    {},
    {"px": math.nan, "nested": {"inf": [math.inf, -math.inf, (math.nan,)]}},
    {"b": 1, "a": 2},  # key order kept
    datetime(2024, 1, 2, 3, 4, 5, 678901),  # naive stays naive
    datetime(2024, 1, 2, tzinfo=UTC),
    datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=9), "KST")),
    datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    date(2024, 2, 29),
    date(1, 1, 1),
    Decimal("1.10"),
    Decimal("-0.000001"),
    Decimal("1E+30"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    np.float64(1.5),
    np.float32(math.nan),
    np.int8(-3),
    np.uint64(2**64 - 1),
    np.bool_(True),
    np.str_("ab"),
    np.bytes_(b"ab"),
    np.complex128(1 + 2j),
    np.datetime64("2024-01-01T00:00:00", "ns"),
    np.timedelta64(5, "m"),
    np.array([[1, 2], [3, 4]], dtype=">i4"),
    np.arange(6.0)[::2],  # not contiguous
    np.array([math.nan, math.inf]),
    np.array([], dtype="U3"),
    np.array(5),
    np.zeros((2, 0, 3)),
    np.array(["2024-01-01"], dtype="datetime64[D]"),
    np.asfortranarray(np.arange(6).reshape(2, 3)),
    [np.float64(1.0), {"a": np.array([True, False])}],
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
def test_listed_values_round_trip_as_themselves(value: Any) -> None:
    codec.check(value)
    assert same(codec.decode(codec.encode(value)), value)


def test_tuple_stays_a_tuple_so_equality_holds() -> None:
    # On the JSON envelope a tuple came back a list, and (1, 2) == [1, 2] is False.
    assert codec.decode(codec.encode((1, 2))) == (1, 2)
    assert codec.decode(codec.encode({"pair": (1, 2)}))["pair"] == (1, 2)


def test_bool_is_not_an_int_and_an_int_is_not_a_float() -> None:
    assert [type(x) for x in codec.decode(codec.encode([True, 1, 1.0]))] == [bool, int, float]


def test_decoded_arrays_are_writable_and_keep_their_values() -> None:
    a = codec.decode(codec.encode(np.array([1.0, 2.0])))
    a *= 2  # the downstream node of the issue: np.array([a, a]) * 2 doubles values
    assert a.tolist() == [2.0, 4.0]


def test_datetime_keeps_hour_and_time_zone() -> None:
    value = datetime(2024, 3, 10, 7, tzinfo=ZoneInfo("America/New_York"))
    back = codec.decode(codec.encode(value))
    assert back.hour == 7 and back.tzinfo == ZoneInfo("America/New_York")
    assert back.utcoffset() == timedelta(hours=-4)


class Point(NamedTuple):
    x: int
    y: int


class Side(enum.IntEnum):
    BUY = 1


class Colour(enum.Enum):
    RED = "red"


class Price(float):
    pass


class Obj:
    pass


class Pytz(tzinfo):
    """A tzinfo that is neither datetime.timezone nor zoneinfo (as pytz or dateutil give)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


REFUSED = [
    ({1, 2}, "value: set", "sorted(value)"),
    (frozenset(), "value: frozenset", "sorted(value)"),
    ({"px": [1.0, 2.0, 3.0, {4.0}]}, "value['px'][3]: set", "sorted(value)"),
    ({1: "a"}, "value is a dict with a int key (1)", "use str keys"),
    ({"a": {b"k": 1}}, "value['a'] is a dict with a bytes key (b'k')", "use str keys"),
    (Point(1, 2), f"value: {__name__}.Point", "._asdict()"),
    ([Point(1, 2)], f"value[0]: {__name__}.Point", "tuple(value)"),
    (collections.OrderedDict(a=1), "value: collections.OrderedDict", "dict(value)"),
    (collections.defaultdict(list), "value: collections.defaultdict", "dict(value)"),
    (Side.BUY, f"value: {__name__}.Side", ".value"),
    (Colour.RED, f"value: {__name__}.Colour", ".value"),
    (Price(1.0), f"value: {__name__}.Price", "plain float"),
    (Obj(), f"value: {__name__}.Obj", "dict, list or tuple"),
    (bytearray(b"x"), "value: bytearray", "bytes(value)"),
    (memoryview(b"x"), "value: memoryview", "bytes(value)"),
    (1j, "value: complex", "dict, list or tuple"),
    (timedelta(1), "value: datetime.timedelta", "dict, list or tuple"),
    (
        datetime(2024, 1, 1, tzinfo=Pytz()),
        f"value is a datetime whose tzinfo is a {__name__}.Pytz",
        "zoneinfo.ZoneInfo",
    ),
    (np.array([None]), "value is a numpy array of dtype object", ".tolist()"),
    (np.zeros(2, dtype=[("a", "f8")]), "value is a numpy array of dtype", ".astype()"),
    # numpy 1.26 names the class numpy.ma.core.MaskedArray, numpy 2 numpy.ma.MaskedArray.
    (np.ma.masked_array([1.0]), "MaskedArray", ".tolist()"),
    (msgpack.ExtType(1, b""), "value: msgpack.ext.ExtType", "plain tuple"),
]


@pytest.mark.parametrize(("value", "where", "fix"), REFUSED, ids=lambda x: repr(x)[:40])
def test_other_values_are_refused_naming_type_path_and_fix(
    value: Any, where: str, fix: str
) -> None:
    for call in (codec.check, codec.encode):
        with pytest.raises(ValueEncodeError) as caught:
            call(value)
        message = str(caught.value)
        assert where in message and fix in message, message
        assert isinstance(caught.value, QmtlError)


def test_at_names_node_and_interval() -> None:
    with pytest.raises(ValueEncodeError) as caught:
        codec.check({"px": {1}})
    located = caught.value.at("signal", "1m")
    assert (located.node, located.interval, located.type_name) == ("signal", "1m", "set")
    assert str(located).startswith("Node 'signal' returned a value at interval 1m")
    assert "value['px']: set" in str(located)


def test_a_value_that_contains_itself_is_refused_not_a_crash() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueEncodeError, match="nested deeper than 256 levels"):
        codec.encode(loop)
    deep: Any = 1.0
    for _ in range(codec.MAX_DEPTH - 1):
        deep = [deep]
    assert codec.decode(codec.encode(deep)) == deep  # the limit itself is fine


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        codec.encode([1, 2]) + b"\x01",
        b"\xd4\x63\x00",
        b"\x81\x01\x02",
        codec.encode(Decimal("1.5")).replace(b"1.5", b"k.5"),
    ],
    ids=[
        "empty",
        "never-used byte",
        "cut short",
        "extra data",
        "unknown ext",
        "int key",
        "damaged decimal",
    ],
)
def test_bytes_that_are_not_a_value_raise_value_decode_error(data: bytes) -> None:
    with pytest.raises(ValueDecodeError, match="not a QMTL value"):
        codec.decode(data)


def test_numpy_is_imported_only_for_numpy_values() -> None:
    script = (
        "import sys, math, datetime, decimal\n"
        "from qmtl import codec\n"
        "v = {'a': (1, 2.5, math.nan), 'd': datetime.datetime(2024, 1, 1), "
        "'x': decimal.Decimal('1.5'), 'big': 2**100}\n"
        "assert codec.decode(codec.encode(v))['big'] == 2**100\n"
        "codec.check(v)\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | st.timezones() | st.just(UTC))
    | st.dates()
    | st.decimals(allow_nan=False)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_values)
def test_any_listed_value_round_trips(value: Any) -> None:
    assert same(codec.decode(codec.encode(value)), value)


def test_a_numpy_value_read_where_numpy_is_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = codec.encode({"w": np.array([1.0, 2.0])})
    monkeypatch.setitem(sys.modules, "numpy", None)  # numpy "not installed" for this read
    with pytest.raises(ValueDecodeError, match=r'pip install "qmtl-core\[numpy\]"') as caught:
        codec.decode(data)
    assert isinstance(caught.value.__cause__, MissingExtraError)
