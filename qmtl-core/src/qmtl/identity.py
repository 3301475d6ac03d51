"""Content-addressed node ids.

A node id is a blake2b hash of what the node computes: its kind, its function's code (including
values captured in closures and default arguments), its upstreams' ids, its effective stream
settings and its key params with their values. The node's name is not part of it, nor are the
line numbers of its source, so the same computation has the same id wherever it is written.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import types
from collections.abc import Callable
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import Any

from pydantic import BaseModel

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 8


def stable_repr(value: Any, _depth: int = 0) -> str:
    """A deterministic text form of ``value`` for hashing (no memory addresses)."""
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
        inner = ",".join(stable_repr(item, depth) for item in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, set | frozenset):
        return "set[" + ",".join(sorted(stable_repr(item, depth) for item in value)) + "]"
    if isinstance(value, dict):
        items = sorted(
            (stable_repr(key, depth), stable_repr(item, depth)) for key, item in value.items()
        )
        return "dict{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
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
    if isinstance(value, types.BuiltinFunctionType | type | types.ModuleType):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    return f"{type(value).__module__}.{type(value).__qualname__}:{_ADDRESS.sub('', repr(value))}"


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
