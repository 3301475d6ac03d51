"""The one value codec (SPEC §5.4): what a node's value may be, and its bytes between processes.

Every engine and state backend uses this module, so a backtest on the local engine fails
exactly where a Kafka deployment would: the local and mock engines run :func:`check` (a type
walk, no serialisation) on every node output; the Kafka envelope and the Redis backend store
:func:`encode` bytes and read them back with :func:`decode`; the memory backend runs
:func:`check` on every write.

The format is MessagePack (the ``msgpack`` library, ``strict_types``) with extension types for
what MessagePack has no type for. Each type comes back as itself, with an equal value:

==========================  ==================================  ================================
value (exact type)          bytes                               notes
==========================  ==================================  ================================
``None``, ``bool``          nil, true/false                     ``True`` stays ``bool``, not 1
``int``                     int (64-bit) or ext 5               any size: beyond 64 bits the
                                                                two's-complement bytes
``float``                   float 64                            NaN and ±inf at any depth
``str``, ``bytes``          str, bin
``list``                    array
``tuple``                   array led by ext 1                  stays a tuple (``==`` holds)
``dict`` (``str`` keys)     map                                 key order kept
``datetime.datetime``       ext 2                               naive stays naive; time zone
                                                                kept: ``datetime.timezone``
                                                                (offset and name) or
                                                                ``zoneinfo.ZoneInfo`` (by key)
``datetime.date``           ext 3 (proleptic ordinal)
``decimal.Decimal``         ext 4 (its ``str``)                 exact, NaN and ±Infinity too
``numpy.ndarray``           ext 6 (dtype, shape, C-order data)  dtype and shape kept; numbers,
                                                                bools, ``datetime64``,
                                                                ``timedelta64``, ``S`` and ``U``
``numpy`` scalars           ext 7 (dtype, data)                 ``np.float64(1.5)`` stays
                                                                ``np.float64``
==========================  ==================================  ================================

One exception is QMTL's own: its ``dict`` subclasses that declare ``_qmtl_carried_as = dict``
(a query node's ``QueryResult``, the analyzer's failure marker) are documented to travel as the
plain dict they compare equal to.

Anything else raises :class:`~qmtl.errors.ValueEncodeError` naming the type and its place in
the value (``value['px'][3]: set``): sets, custom objects, dicts with non-``str`` keys, object
or structured numpy arrays, datetimes with another kind of ``tzinfo`` (pytz, dateutil), and
every **subclass** of a listed type — ``namedtuple``, ``OrderedDict``, ``defaultdict``,
``IntEnum``/``StrEnum``, ``pandas.Timestamp``, ``bytearray`` — because rebuilding a user class
on another machine needs code execution (no pickle), and turning it into its base type would
change what ``==`` and attribute access do downstream. Values nested deeper than
:data:`MAX_DEPTH` levels (or containing themselves) are refused too.

numpy is never imported by this module unless a value's type comes from numpy (encoding) or
the bytes hold a numpy extension (decoding).

Public API: :func:`encode`, :func:`decode`, :func:`check` (``node=`` and ``interval=`` name the
series in the error), :data:`PLAIN_TYPES` (a hot loop's guard: ``if type(v) not in PLAIN_TYPES:
check(v, ...)``), :func:`type_name` and :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import struct
import sys
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from qmtl.errors import ValueDecodeError, ValueEncodeError
from qmtl.extras import require

__all__ = ["MAX_DEPTH", "PLAIN_TYPES", "check", "decode", "encode", "type_name"]

#: Deepest nesting of lists, tuples and dicts accepted (MessagePack's own limit is 511).
MAX_DEPTH = 256

_TUPLE, _DATETIME, _DATE, _DECIMAL, _BIGINT, _NDARRAY, _NPSCALAR = 1, 2, 3, 4, 5, 6, 7
_TUPLE_HEAD = msgpack.ExtType(_TUPLE, b"")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1
#: numpy dtype kinds that survive as raw bytes (object and structured/void are refused).
_NUMPY_KINDS = frozenset("biufcmMSU")

#: Exact types that need no walk: the leaves whose every value is carried as it is.
_PLAIN: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes, date, Decimal})

# datetime: year, month, day, hour, minute, second, microsecond, fold, tz kind
_DT = struct.Struct("<HBBBBBIBB")
_TZ_NAIVE, _TZ_OFFSET, _TZ_NAMED_OFFSET, _TZ_ZONEINFO = 0, 1, 2, 3
_OFFSET = struct.Struct("<q")  # time zone offset in microseconds
_ORDINAL = struct.Struct("<I")


#: The leaf types that need no walk (exact types): ``None``, ``bool``, ``int``, ``float``,
#: ``str``, ``bytes``, ``date``, ``Decimal``.
PLAIN_TYPES = _PLAIN


# -- the type walk -------------------------------------------------------------------------
class _Refused(Exception):
    """Raised inside the walk; carries the path (innermost first) back to :func:`check`."""

    def __init__(self, value: Any, reason: str | None = None, fix: str | None = None) -> None:
        self.value = value
        self.reason = reason
        self.fix = fix
        self.path: list[str] = []


def check(value: Any, *, node: str | None = None, interval: str | None = None) -> None:
    """Raise :class:`~qmtl.errors.ValueEncodeError` on the first value the codec cannot carry.

    A type walk, no serialisation: the cost is a type lookup per leaf. The error names the
    type and its path inside the value (``value['px'][3]: set``), and ``node`` and
    ``interval`` when given (an engine names the series the value was returned for).
    """
    if type(value) in _PLAIN or _flat(value):
        return
    try:
        _walk(value, 0)
    except _Refused as refused:
        error = _error(refused)
        raise (error if node is None else error.at(node, interval)) from None


def _flat(value: Any) -> bool:
    """True for the common shapes, checked without a call per item: a list, tuple or dict (str
    keys) whose items are plain, or lists/tuples of plain items. Anything else (or a refusal)
    takes the full walk, which also finds the path."""
    t, plain = type(value), _PLAIN
    if t is dict:
        items: Any = value.values()
        for key in value:
            if type(key) is not str:
                return False
    elif t is list or t is tuple:
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind not in plain:
            if kind is not tuple and kind is not list:
                return False
            for leaf in item:
                if type(leaf) not in plain:
                    return False
    return True


def _error(refused: _Refused) -> ValueEncodeError:
    steps = refused.path[::-1]
    if len(steps) > 12:
        steps = [*steps[:5], "...", *steps[-5:]]
    return ValueEncodeError(
        type_name(refused.value),
        path="value" + "".join(steps),
        reason=refused.reason,
        fix=refused.fix or _fix(refused.value),
    )


def _fix(value: Any) -> str:
    """What to return instead of a refused value."""
    if isinstance(value, bytearray | memoryview):
        return "return bytes(value) instead"
    if isinstance(value, set | frozenset):
        return "return sorted(value) (a list) or a tuple instead"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return "return a plain tuple(value) or a dict (value._asdict()) instead"
    if isinstance(value, Enum):
        return "return its .value (or .name) instead"
    if isinstance(value, dict):
        return "return a plain dict(value) instead"
    if type(value).__module__.startswith("pandas"):
        return "return plain data instead: .to_pydatetime(), .to_numpy(), .to_dict() or .tolist()"
    if isinstance(value, datetime | date | int | float | str | bytes | list | tuple):
        base = next(b for b in type(value).__mro__ if b in _PLAIN or b in (datetime, list, tuple))
        return f"return a plain {base.__name__} instead (subclasses do not travel)"
    if type(value).__module__.startswith("numpy"):
        return "convert it with .item(), .astype() or .tolist()"
    return "return its data as a dict, list or tuple of the supported types instead"


def type_name(value: Any) -> str:
    """The name errors use for ``value``'s type: ``set``, ``collections.OrderedDict``."""
    t = type(value)
    module = t.__module__
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


def _walk(value: Any, depth: int) -> None:
    t = type(value)
    if t in _PLAIN:
        return
    if depth >= MAX_DEPTH:
        raise _Refused(
            value,
            f"nested deeper than {MAX_DEPTH} levels",
            "return a flatter value (does it contain itself?)",
        )
    plain = _PLAIN
    if t is list or t is tuple:
        for item in value:  # the common flat case first, without indexes
            if type(item) not in plain:
                break
        else:
            return
        for i, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{i}]")
                raise
        return
    if t is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(
                    value,
                    f"a dict with a {type_name(key)} key ({key!r:.40})",
                    "use str keys: {str(k): v for k, v in value.items()}",
                )
            if type(item) not in plain:
                try:
                    _walk(item, depth + 1)
                except _Refused as refused:
                    refused.path.append(f"[{key!r}]")
                    raise
        return
    if t is datetime:
        _tz_kind(value)
        return
    if t.__module__ == "numpy":
        _check_numpy(value)
        return
    if getattr(t, "_qmtl_carried_as", None) is dict and isinstance(value, dict):
        _walk(dict(value), depth)  # QMTL's own dict subclasses (a query node's QueryResult)
        return
    raise _Refused(value)


def _tz_kind(value: datetime) -> int:
    tz = value.tzinfo
    if tz is None:
        return _TZ_NAIVE
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        named = tz.tzname(None) != timezone(offset).tzname(None)
        return _TZ_NAMED_OFFSET if named else _TZ_OFFSET
    if type(tz) is ZoneInfo and tz.key:
        return _TZ_ZONEINFO
    raise _Refused(
        value,
        f"a datetime whose tzinfo is a {type_name(tz)}",
        "use a zoneinfo.ZoneInfo or datetime.timezone time zone "
        "(dt.astimezone(zoneinfo.ZoneInfo(name)))",
    )


def _check_numpy(value: Any) -> None:
    np = sys.modules["numpy"]
    t = type(value)
    if t is np.ndarray:
        if value.dtype.kind not in _NUMPY_KINDS or value.dtype.fields is not None:
            raise _Refused(
                value,
                f"a numpy array of dtype {value.dtype}",
                "only numeric, bool, datetime64, timedelta64, bytes and str dtypes travel: "
                "convert it with .astype() or .tolist()",
            )
        return
    if isinstance(value, np.generic) and value.dtype.kind in _NUMPY_KINDS:
        return
    raise _Refused(value)


# -- encoding ------------------------------------------------------------------------------
def _default(value: Any) -> Any:
    """MessagePack's hook for every value it has no exact type for (the walk allowed it)."""
    t = type(value)
    if t is tuple:
        return [_TUPLE_HEAD, *value]
    if t is datetime:
        kind = _tz_kind(value)
        head = _DT.pack(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.fold,
            kind,
        )
        tz = value.tzinfo
        if kind == _TZ_OFFSET or kind == _TZ_NAMED_OFFSET:
            assert tz is not None
            offset = tz.utcoffset(None)
            assert offset is not None
            head += _OFFSET.pack(offset // timedelta(microseconds=1))
            if kind == _TZ_NAMED_OFFSET:
                head += str(tz.tzname(None)).encode("utf-8")
        elif kind == _TZ_ZONEINFO:
            assert type(tz) is ZoneInfo
            head += tz.key.encode("utf-8")
        return msgpack.ExtType(_DATETIME, head)
    if t is date:
        return msgpack.ExtType(_DATE, _ORDINAL.pack(value.toordinal()))
    if t is Decimal:
        return msgpack.ExtType(_DECIMAL, str(value).encode("ascii"))
    if t is int:
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(_BIGINT, value.to_bytes(size, "big", signed=True))
    if t.__module__ == "numpy":
        return _encode_numpy(value)
    if getattr(t, "_qmtl_carried_as", None) is dict:
        return dict(value)
    raise _Refused(value)


def _encode_numpy(value: Any) -> msgpack.ExtType:
    np = sys.modules["numpy"]
    dtype = value.dtype.str.encode("ascii")
    if type(value) is np.ndarray:
        shape = value.shape
        head = struct.pack(f"<B{len(dtype)}sB{len(shape)}q", len(dtype), dtype, len(shape), *shape)
        return msgpack.ExtType(_NDARRAY, head + value.tobytes(order="C"))
    return msgpack.ExtType(_NPSCALAR, bytes([len(dtype)]) + dtype + value.tobytes())


def encode(value: Any, *, checked: bool = False) -> bytes:
    """The value as bytes; raises :class:`~qmtl.errors.ValueEncodeError` (from :func:`check`)
    for anything the codec does not carry. ``checked``: every part of ``value`` was checked
    already or decoded by this codec (an engine re-packing what it read), so the type walk is
    skipped."""
    if not checked:
        check(value)  # MAX_DEPTH is below msgpack's own nesting limit, so packing cannot fail
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


# -- decoding ------------------------------------------------------------------------------
class _TupleHead:
    """What ext 1 decodes to: the marker that turns the array it leads into a tuple."""


_HEAD = _TupleHead()


def _list_hook(items: list[Any]) -> Any:
    if items and items[0] is _HEAD:
        return tuple(items[1:])
    return items


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return _HEAD
    if code == _DATETIME:
        return _decode_datetime(data)
    if code == _DATE:
        return date.fromordinal(_ORDINAL.unpack(data)[0])
    if code == _DECIMAL:
        return Decimal(data.decode("ascii"))
    if code == _BIGINT:
        return int.from_bytes(data, "big", signed=True)
    if code == _NDARRAY or code == _NPSCALAR:
        return _decode_numpy(code, data)
    raise ValueError(f"unknown extension type {code}")


def _decode_datetime(data: bytes) -> datetime:
    year, month, day, hour, minute, second, micro, fold, kind = _DT.unpack_from(data)
    rest = data[_DT.size :]
    tz: tzinfo | None = None
    if kind == _TZ_OFFSET or kind == _TZ_NAMED_OFFSET:
        offset = timedelta(microseconds=_OFFSET.unpack_from(rest)[0])
        name = rest[_OFFSET.size :].decode("utf-8")
        tz = timezone(offset, name) if kind == _TZ_NAMED_OFFSET else timezone(offset)
    elif kind == _TZ_ZONEINFO:
        tz = ZoneInfo(rest.decode("utf-8"))
    elif kind != _TZ_NAIVE:
        raise ValueError(f"unknown time zone kind {kind}")
    return datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)


def _decode_numpy(code: int, data: bytes) -> Any:
    np = require("numpy", "Decoding a numpy value (it was encoded where numpy is installed)")

    size = data[0]
    dtype = np.dtype(data[1 : 1 + size].decode("ascii"))
    at = 1 + size
    if code == _NPSCALAR:
        return np.frombuffer(data, dtype, count=1, offset=at)[0]
    ndim = data[at]
    shape = struct.unpack_from(f"<{ndim}q", data, at + 1)
    body = bytearray(memoryview(data)[at + 1 + 8 * ndim :])  # writable, like the original
    return np.frombuffer(body, dtype).reshape(shape)


#: What msgpack and the extension decoders raise for bytes that are not an encoded value
#: (a missing time zone is a KeyError: ``zoneinfo.ZoneInfoNotFoundError``).
_CORRUPT = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    InvalidOperation,  # a Decimal whose text was damaged
    struct.error,
    msgpack.UnpackException,
)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value :func:`encode` turned into ``data``; raises
    :class:`~qmtl.errors.ValueDecodeError` for bytes that are not such a value."""
    try:
        return msgpack.unpackb(
            data,
            ext_hook=_ext_hook,
            list_hook=_list_hook,
            strict_map_key=True,
            raw=False,
            use_list=True,
        )
    except ImportError as error:  # qmtl.extras.MissingExtraError, raised by _decode_numpy
        raise ValueDecodeError(
            "The value holds a numpy array or scalar, and numpy is not installed here: "
            'pip install "qmtl-core[numpy]"'
        ) from error
    except _CORRUPT as error:
        raise ValueDecodeError(
            f"{len(data)} bytes are not a QMTL value ({type(error).__name__}: {error}); "
            "they were not written by qmtl.codec.encode, or were cut short"
        ) from error
