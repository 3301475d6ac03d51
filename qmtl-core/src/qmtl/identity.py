"""Content-addressed node ids.

A node id is a blake2b hash of what the node computes: its kind, its function's code (including
values captured in closures and default arguments), its upstreams' ids, its effective stream
settings and its key params with their values. The node's name is not part of it, nor are the
line numbers of its source, so the same computation has the same id wherever it is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections.abc import Callable
from enum import Enum
from typing import Any

from pydantic import BaseModel

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 8


def stable_repr(value: Any, _depth: int = 0) -> str:
    """A deterministic text form of ``value`` for hashing (no memory addresses)."""
    if _depth > _MAX_DEPTH:
        return "<deep>"
    depth = _depth + 1
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value)
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


def content_id(*parts: str) -> str:
    """Hex blake2b (32 bytes) of ``parts``."""
    digest = hashlib.blake2b(digest_size=32)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
