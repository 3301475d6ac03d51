"""Content-addressed node ids.

A node id is a blake2b hash of what the node computes: its kind, its function's code (including
values captured in closures and default arguments), its upstreams' ids, its effective stream
settings and its key params with their values. The node's name is not part of it, nor are the
line numbers of its source, so the same computation has the same id wherever it is written.

Objects (a source such as ``PriceFeed("BTC")``, the instance of a bound method, a callable
object, a value captured in a closure) are identified by their class and their **state**, so
``PriceFeed("BTC")`` and ``PriceFeed("ETH")`` are two series (SPEC §4.2):

1. a class may declare its identity with a method ``__qmtl_key__(self)`` returning plain values
   (``return (self.exchange, self.symbol)``): then only that counts. Declare it when the
   instance attributes hold things that are not the series' identity, or that differ from one
   process to the next (a client, a session id, a connection, a cache, a clock reading);
2. otherwise its instance attributes count (``vars(obj)`` and every ``__slots__`` entry, by
   name): plain data (numbers, strings, containers, dates, enums, functions' code, pydantic
   models, numpy arrays and pandas objects by content) in full, and an object found inside them
   by its class and its ``repr`` (memory addresses removed): one level deep, so a client or a
   logger held by a source does not make its id depend on that client's internals;
3. an object with no instance attributes by its ``repr`` (memory addresses removed).

Nothing depends on the process: no addresses, no ``hash()`` (set items are sorted by their
text), so every worker of a deployment computes the same ids.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import functools
import hashlib
import math
import pathlib
import re
import sys
import types
import uuid
from collections.abc import Callable
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import Any

from pydantic import BaseModel

from qmtl.errors import PipelineValidationError

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 8
#: Types whose ``repr`` is their whole value (and whose slots hold caches, for paths).
_VALUE_TYPES = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.tzinfo,
    decimal.Decimal,
    fractions.Fraction,
    complex,
    uuid.UUID,
    pathlib.PurePath,
    range,
    re.Pattern,
)
_UNSET_SLOT = "<unset>"
#: Packages of runtime machinery (locks, sockets, files, loggers, queues): an object of theirs
#: counts by its class only, since its state (locked, open, a file descriptor) varies.
_RUNTIME_MODULES = frozenset(
    {
        "_thread",
        "threading",
        "_socket",
        "socket",
        "ssl",
        "_ssl",
        "select",
        "selectors",
        "asyncio",
        "queue",
        "_queue",
        "multiprocessing",
        "concurrent",
        "io",
        "_io",
        "logging",
        "sqlite3",
        "weakref",
        "_weakref",
        "subprocess",
    }
)


def stable_repr(value: Any, _depth: int = 0, *, _walk: bool = True) -> str:
    """A deterministic text form of ``value`` for hashing (see the module docstring).

    ``_walk=False`` (inside an object's attributes) renders objects by their ``repr`` instead
    of their attributes.
    """
    if _depth > _MAX_DEPTH:
        return "<deep>"
    depth = _depth + 1
    kind = type(value)
    if kind in _EXACT_SCALARS or value is None:
        return _scalar(value)
    if kind is tuple or kind is list:  # the usual containers first: the same text as below
        return f"{kind.__name__}[{','.join([stable_repr(item, depth) for item in value])}]"
    if value is None or isinstance(value, bool | int | float | str):
        return _scalar(value)
    if isinstance(value, Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        inner = ",".join(stable_repr(item, depth, _walk=_walk) for item in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, set | frozenset):
        items = sorted(stable_repr(item, depth, _walk=_walk) for item in value)
        return "set[" + ",".join(items) + "]"
    if isinstance(value, dict):
        pairs = sorted(
            (stable_repr(key, depth, _walk=_walk), stable_repr(item, depth, _walk=_walk))
            for key, item in value.items()
        )
        return "dict{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    if isinstance(value, BaseModel):
        return f"{type(value).__qualname__}{value.model_dump_json()}"
    if isinstance(value, types.FunctionType):
        return function_fingerprint(value, depth)
    if isinstance(value, types.CodeType):
        return code_fingerprint(value, depth)
    if isinstance(value, types.GeneratorType):
        frame = value.gi_frame
        local_values = stable_repr(dict(frame.f_locals), depth) if frame is not None else "done"
        return "generator:" + code_fingerprint(value.gi_code, depth) + ":" + local_values
    if isinstance(value, types.MethodType):
        return (
            stable_repr(value.__self__, depth) + "." + function_fingerprint(value.__func__, depth)
        )
    if isinstance(value, functools.partial):
        return "partial:" + "|".join(
            (
                function_fingerprint(value.func, depth),
                stable_repr(value.args, depth),
                stable_repr(value.keywords, depth),
            )
        )
    if isinstance(value, types.BuiltinFunctionType):  # builtin functions and their methods
        owner = value.__self__
        bound = "" if owner is None or isinstance(owner, types.ModuleType) else "bound:"
        name = f"{getattr(value, '__module__', '')}.{value.__qualname__}"
        return bound + (stable_repr(owner, depth) + "." if bound else "") + name
    if isinstance(value, type | types.ModuleType):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    return _object(value, depth, _walk)


def _object(value: Any, depth: int, walk: bool) -> str:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    declared = getattr(kind, "__qmtl_key__", None)
    if declared is not None:
        try:
            key = declared(value)
        except Exception as error:  # the user's hook failed
            raise PipelineValidationError(
                f"{kind.__qualname__}.__qmtl_key__() raised {type(error).__name__}: {error}; "
                "it must return the plain values that identify the object's series"
            ) from error
        return f"{name}:key:{stable_repr(key, depth)}"
    if isinstance(value, _VALUE_TYPES):
        return f"{name}:{value!r}"
    content = _content(value)
    if content is not None:
        return f"{name}:{content}"
    if kind.__module__.partition(".")[0] in _RUNTIME_MODULES:
        return name  # a lock, socket, file, logger...: its state is not the series' identity
    if walk:
        state = _state(value)
        if state is not None:
            return f"{name}:{stable_repr(state, depth, _walk=False)}"
    return f"{name}:{_ADDRESS.sub('', repr(value))}"


def _state(value: Any) -> dict[str, Any] | None:
    """Instance attributes: ``vars()`` and every ``__slots__`` entry; ``None`` without any."""
    try:
        attributes: dict[str, Any] | None = dict(vars(value))
    except TypeError:  # no __dict__
        attributes = None
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{klass.__name__.lstrip('_')}{slot}"  # name mangling
            if attributes is None:
                attributes = {}
            attributes[slot] = getattr(value, slot, _UNSET_SLOT)
    return attributes


def _content(value: Any) -> str | None:
    """A digest of a numpy array's or pandas object's data (their reprs are abridged)."""
    package = type(value).__module__.partition(".")[0]
    if package == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
        if value.dtype.hasobject:
            return f"{value.dtype.str}{value.shape}:{stable_repr(value.tolist())}"
        digest = hashlib.blake2b(value.tobytes(order="C"), digest_size=16).hexdigest()
        return f"{value.dtype.str}{value.shape}:{digest}"
    if package == "pandas" and hasattr(value, "to_numpy"):  # Series, DataFrame, Index
        pandas = sys.modules["pandas"]  # imported: one of its objects is here
        labels = repr(getattr(value, "columns", getattr(value, "name", None)))
        dtypes = str(getattr(value, "dtypes", getattr(value, "dtype", "")))
        try:
            rows = pandas.util.hash_pandas_object(value, index=True).to_numpy()
        except TypeError:  # unhashable cells (lists, dicts): their text
            cells = value.to_dict() if hasattr(value, "to_dict") else value.tolist()
            return f"{stable_repr(labels)}:{stable_repr(cells)}"
        digest = hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest()
        return f"{stable_repr(labels)}:{stable_repr(dtypes)}:{digest}"
    return None


_EXACT_SCALARS = frozenset((bool, int, float, str))


def _scalar(value: bool | int | float | str | None) -> str:
    """``json.dumps(value)`` for a scalar, character for character (ids depend on it), without
    the encoder's set-up per call."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


@functools.lru_cache(maxsize=4096)
def code_fingerprint(code: types.CodeType, _depth: int = 0) -> str:
    """Bytecode, constants and names of ``code`` (line numbers excluded)."""
    consts = ",".join(stable_repr(const, _depth + 1) for const in code.co_consts)
    return "|".join(
        (
            code.co_code.hex(),
            consts,
            ",".join(code.co_names),
            ",".join(code.co_varnames),
            ",".join(code.co_freevars),
            str(code.co_argcount),
            str(code.co_kwonlyargcount),
            str(code.co_flags),
        )
    )


def function_fingerprint(fn: Callable[..., Any], _depth: int = 0) -> str:
    """Fingerprint of a callable: code, closure values, defaults and keyword defaults."""
    if isinstance(fn, types.MethodType):
        return stable_repr(fn, _depth)
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object or builtin
        call = type(fn).__call__ if callable(fn) else None
        inner = (
            function_fingerprint(call, _depth + 1) if isinstance(call, types.FunctionType) else ""
        )
        return stable_repr(fn, _depth + 1) + inner
    closure = getattr(fn, "__closure__", None) or ()
    captured = []
    for cell in closure:
        try:
            captured.append(stable_repr(cell.cell_contents, _depth + 1))
        except ValueError:  # an empty cell (a name bound later)
            captured.append("<empty>")
    return "|".join(
        (
            code_fingerprint(code, _depth),
            ",".join(captured),
            stable_repr(getattr(fn, "__defaults__", None), _depth + 1),
            stable_repr(getattr(fn, "__kwdefaults__", None), _depth + 1),
        )
    )


class IdentityMemo:
    """Results of a pure function of one or two immutable objects, keyed by their identity.

    The objects are kept alive while remembered, so an id is never reused for another object
    while its result is here; the memo is emptied when it holds ``size`` results.
    """

    def __init__(self, size: int = 4096) -> None:
        self._found: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._size = size

    def get(self, first: Any, second: Any = None) -> Any:
        """The result remembered for exactly these objects, or ``None``."""
        found = self._found.get((id(first), id(second)))
        if found is None or found[0] is not first or found[1] is not second:
            return None
        return found[2]

    def put(self, first: Any, second: Any, result: Any) -> None:
        if len(self._found) >= self._size:
            self._found.clear()
        self._found[(id(first), id(second))] = (first, second, result)


def content_id(*parts: str) -> str:
    """Hex blake2b (32 bytes) of ``parts``."""
    digest = hashlib.blake2b(digest_size=32)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
