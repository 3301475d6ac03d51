"""Vectorized nodes: a function over columns, one row per bucket.

``Node(name, fn, upstreams=[...], vectorized=True)`` declares that ``fn`` takes numpy arrays
and returns an array, **row by row**:

- each upstream arrives as ``numpy.asarray`` of its values, one row per bucket the node
  computes (the as-of value of that bucket); with ``window=N``, a 2-D array whose row is that
  bucket's window, oldest first;
- ``fn`` returns an array-like with one row per input row, and row ``i`` of the result depends
  only on row ``i`` of the inputs: elementwise arithmetic, ``numpy.where``, comparisons,
  reductions along ``axis=1`` of a window (``px.mean(axis=1)``). Operations across rows
  (``cumsum``, ``diff``, shifting) break the contract; ask for ``window=N`` to see earlier
  buckets instead;
- every output row becomes the bucket's value as a plain Python value (``ndarray.tolist()``:
  ``float``, ``int``, ``bool``, a list for a row of a 2-D result).

The event-at-a-time path (every engine, one-shot runs included) calls ``fn`` with one-row
arrays (:func:`row_invoker`); the local engine's columnar path calls it once per chunk of
buckets. Because ``fn`` is row-wise, both give the same values. Where a column cannot be one
numpy array exactly as its rows would be (:func:`column_array`: values of mixed types,
non-numbers, ints beyond int64), the columnar path calls ``fn`` row by row as the event path
does, so results never depend on the path, only speed does.

numpy is optional: ``pip install 'qmtl-engine-local[columnar]'`` (or ``'qmtl-core[columnar]'``
where only the event path runs, e.g. a Kafka worker). Without it a vectorized node is refused
when it is built, with :class:`~qmtl.extras.MissingExtraError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from qmtl.errors import VectorizedOutputError
from qmtl.extras import MissingExtraError

if TYPE_CHECKING:
    import numpy as np

EXTRA = "pip install 'qmtl-engine-local[columnar]'"


def numpy_module(purpose: str) -> ModuleType:
    """numpy, or :class:`~qmtl.extras.MissingExtraError` saying that ``purpose`` needs it."""
    try:
        import numpy
    except ImportError as error:
        raise MissingExtraError(
            f"{purpose} needs numpy, which is not installed; install the columnar extra: {EXTRA}"
        ) from error
    return numpy


def column_array(values: Sequence[Any]) -> np.ndarray[Any, Any] | None:
    """``numpy.asarray(values)`` when every row would become the same array on its own.

    That holds when all values have one numeric type: ``float``, ``bool``, ``complex``,
    ``int`` within int64, or one numpy scalar type. Otherwise ``None``: the caller works row
    by row.
    """
    import numpy as np

    if not values:
        return None
    kinds = set(map(type, values))
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind is int:
        array = np.asarray(values)
        return array if array.dtype == np.int64 else None
    if kind in (float, bool, complex) or issubclass(kind, np.number | np.bool_):
        return np.asarray(values)
    return None


#: dtypes whose rows come back unchanged from ``tolist()`` and ``numpy.asarray``: a column of
#: such a dtype is what a reader's one-row arrays would be.
EXACT_DTYPES = frozenset({"float64", "int64", "bool", "complex128"})


def output_rows(node: str, result: Any, rows: int) -> np.ndarray[Any, Any]:
    """``result`` as an array of ``rows`` rows, else :class:`VectorizedOutputError`."""
    import numpy as np

    array = np.asarray(result)
    if array.ndim == 0 or array.shape[0] != rows:
        got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
        raise VectorizedOutputError(
            f"Vectorized node '{node}' returned {got} for {rows} input rows; return one value "
            "per row (e.g. reduce a window with axis=1), or drop vectorized=True"
        )
    return array


def row_invoker(
    node: str,
    fn: Callable[..., Any],
    upstreams: Sequence[str],
    params: Mapping[str, Any],
    style: str,
) -> Callable[[Sequence[Any]], Any]:
    """The event-at-a-time call of a vectorized node: one-row arrays in, one value out."""
    np = numpy_module(f"Node '{node}' is vectorized, which")
    asarray = np.asarray
    kwargs = dict(params)
    names = tuple(upstreams)

    def call(values: Sequence[Any]) -> Any:
        arrays = [asarray([value]) for value in values]
        if style == "keyword":
            result = fn(**dict(zip(names, arrays, strict=True)), **kwargs)
        else:
            result = fn(*arrays, **kwargs)
        return output_rows(node, result, 1).tolist()[0]

    return call


__all__ = [
    "EXACT_DTYPES",
    "EXTRA",
    "column_array",
    "numpy_module",
    "output_rows",
    "row_invoker",
]
