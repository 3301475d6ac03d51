"""Calling a node over a run of buckets: once per bucket, or once per run when vectorized.

A scalar node's function is mapped over its argument columns (``map`` at C speed, positional
when the function's leading parameters are its upstreams in some order, else through the
plan's invoker, exactly as the event path binds it). Arguments are the very Python objects the
event path would pass: the as-of value of each upstream, or a new list of its last ``N``
values for ``window=N``. Results are collected with ``list.extend`` so that when the function
raises, the buckets computed before the failing one are known and written, as one bucket at a
time would have.

A vectorized node (:mod:`qmtl.vectorized`) gets each upstream as one numpy array (windows as
a 2-D array of rows); when a column cannot be one exact array, or the call fails or returns the
wrong number of rows, the node is called row by row through its event-path invoker instead, so
values and the failing bucket are the event path's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from qmtl.codec import PLAIN_TYPES, check
from qmtl.errors import ValueEncodeError
from qmtl.node import Node
from qmtl.plan import PlanNode
from qmtl.vectorized import output_rows
from qmtl_engine_local.columnar._align import Array, Col, Ready


class ColumnNode:
    """How one plan node is called over columns (shared by its intervals)."""

    __slots__ = ("call", "invoke", "name", "order", "vectorized")

    def __init__(self, node: PlanNode) -> None:
        self.name = node.name
        self.invoke = node.invoke
        owner = node.node
        self.vectorized = isinstance(owner, Node) and owner.vectorized
        self.call: Callable[..., Any] | None = None
        self.order: list[int] = []
        if self.vectorized:
            assert isinstance(owner, Node)
            self.call, self.order = _bound(owner, node.upstreams, vectorized=True)
        elif node.kind != "query" and isinstance(owner, Node):
            self.call, self.order = _bound(owner, node.upstreams, vectorized=False)

    def compute(
        self, ready: Ready, window: int | None, checked: str | None
    ) -> tuple[Col, Exception | None]:
        """The node's values at ``ready.buckets``; on failure, those before the failing bucket
        and the error. ``checked`` (the interval's name) has every value go through
        :func:`qmtl.codec.check` as on the event path, which checks each value as it is
        computed: a refused value stops the node there."""
        if self.vectorized:
            done = self._vectorized(ready, window)
            if done is not None:
                if checked is None or done.exact():
                    return done, None
                return self._checked(done.buckets, done.py(), None, checked)
        columns = [
            _python_args(col, counts, dense, window)
            for col, counts, dense in zip(ready.columns, ready.counts, ready.dense, strict=True)
        ]
        out: list[Any] = []
        error: Exception | None = None
        try:
            if self.call is not None and not self.vectorized:
                out.extend(map(self.call, *[columns[i] for i in self.order]))
            else:
                out.extend(map(self.invoke, zip(*columns, strict=True)))
        except Exception as failure:  # the event path's NodeExecutionError, raised by the runner
            error = failure
        if checked is not None:
            return self._checked(ready.buckets, out, error, checked)
        return Col(ready.buckets[: len(out)], out), error

    def _checked(
        self, buckets: Array, out: list[Any], error: Exception | None, interval: str
    ) -> tuple[Col, Exception | None]:
        refused = first_refused(out, self.name, interval)
        if refused is not None:
            at, error = refused
            out = out[:at]
        return Col(buckets[: len(out)], out), error

    def _vectorized(self, ready: Ready, window: int | None) -> Col | None:
        arrays = []
        for col, counts, dense in zip(ready.columns, ready.counts, ready.dense, strict=True):
            base = col.arr()
            if base is None:
                return None
            arrays.append(_array_args(base, counts, dense, window))
        assert self.call is not None
        try:
            result = self.call(*[arrays[i] for i in self.order])
            rows = output_rows(self.name, result, len(ready.buckets))
        except Exception:  # retried row by row, which finds the failing bucket
            return None
        return Col.from_rows(ready.buckets, rows)


def first_refused(
    values: list[Any], node: str, interval: str
) -> tuple[int, ValueEncodeError] | None:
    """The position of the first value :func:`qmtl.codec.check` refuses, and its error."""
    if set(map(type, values)) <= PLAIN_TYPES:
        return None
    for at, value in enumerate(values):
        if type(value) not in PLAIN_TYPES:
            try:
                check(value, node=node, interval=interval)
            except ValueEncodeError as error:
                return at, error
    return None


def _python_args(col: Col, counts: Array, dense: bool, window: int | None) -> list[Any]:
    if window is None:
        return col.take(counts - 1, dense)
    values = col.py()
    return [values[end - window : end] for end in counts.tolist()]


def _array_args(base: Array, counts: Array, dense: bool, window: int | None) -> Array:
    if window is None:
        if dense and len(counts):
            return base[int(counts[0]) - 1 : int(counts[-1])]
        return base[counts - 1]  # type: ignore[no-any-return]
    view = sliding_window_view(base, window, axis=0)
    if base.ndim > 1:  # the window axis goes right after the row axis, as np.asarray(rows)
        view = np.moveaxis(view, -1, 1)
    return view[counts - window]  # type: ignore[no-any-return]


def _bound(owner: Node, upstreams: tuple[str, ...], vectorized: bool) -> tuple[Any, list[int]]:
    """A positional callable and the upstream order of its leading parameters, or
    ``(None, [])`` when the function can only be called as the plan's invoker calls it."""
    fn, params = owner.fn, owner.params
    call = partial(fn, **params) if params else fn
    count = len(upstreams)
    if owner.call_style == "positional":
        return call, list(range(count))
    try:
        parameters = list(inspect.signature(fn).parameters.values())[:count]
    except (TypeError, ValueError):
        parameters = []
    names = [p.name for p in parameters]
    if len(parameters) == count and sorted(names) == sorted(upstreams):
        if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
            return call, [upstreams.index(name) for name in names]
    if vectorized:  # by keyword, in the plan's upstream order
        names = list(upstreams)
        return (lambda *arrays: fn(**dict(zip(names, arrays, strict=True)), **params)), list(
            range(count)
        )
    return None, []
