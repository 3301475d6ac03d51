"""How a node's function receives its upstream values, decided once when the node is built.

If the function takes ``**kwargs`` or has a parameter named after every upstream, upstream
values are passed by name; otherwise positionally, in ``upstreams`` order. Extra keyword
``params`` always go by keyword. A function that cannot be bound that way is an error when the
node is constructed.

By-name binding is then mapped to positions (:func:`call_style` returns the order), so an engine
calls the function positionally wherever Python's binding is the same: with the upstreams in
the function's parameter order and no params, the plan's ``call`` is the user's function itself.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import FunctionType
from typing import Any, Literal

from qmtl.errors import UnbindableFunctionError

Invoker = Callable[[Sequence[Any]], Any]
CallStyle = Literal["positional", "keyword"]


def call_style(
    node: str, fn: Callable[..., Any], upstreams: Sequence[str], params: Mapping[str, Any]
) -> tuple[CallStyle, tuple[int, ...] | None]:
    """How ``fn`` takes its upstream values, and the positional order they can be passed in.

    The order (``None`` when only keywords work) lists, for each of ``fn``'s leading parameters,
    the upstream it takes: by-name binding is mapped to positions here, once, so a call costs
    what a positional call costs.

    A plain Python function is read from its code object (:func:`_from_code`, the fast path of
    a build); anything else, and every function that cannot be bound, goes through
    :func:`inspect.signature`, which also words the error.
    """
    found = _from_code(fn, upstreams, params)
    if found is not None:
        return found
    return _from_signature(node, fn, upstreams, params)


def _from_signature(
    node: str, fn: Callable[..., Any], upstreams: Sequence[str], params: Mapping[str, Any]
) -> tuple[CallStyle, tuple[int, ...] | None]:
    """:func:`call_style` through :func:`inspect.signature`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise UnbindableFunctionError(
            f"Node '{node}': cannot read the signature of {fn!r}; pass a Python function"
        ) from error
    parameters = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = all(
        name in parameters and parameters[name].kind in (p_kw, p_pos_kw) for name in upstreams
    )
    style: CallStyle = "keyword" if upstreams and (takes_kwargs or named) else "positional"
    clash = set(upstreams) & set(params)
    if style == "keyword" and clash:
        raise UnbindableFunctionError(
            f"Node '{node}': params {sorted(clash)} have the names of upstreams; rename them"
        )
    try:
        if style == "keyword":
            signature.bind(**dict.fromkeys(upstreams), **params)
        else:
            signature.bind(*[None] * len(upstreams), **params)
    except TypeError as error:
        raise UnbindableFunctionError(
            f"Node '{node}': function {getattr(fn, '__name__', fn)!r}{signature} cannot take "
            f"{len(upstreams)} upstream value(s) {list(upstreams)} and params {sorted(params)}: "
            f"{error}. Name its parameters after the upstreams, or make it accept them in order"
        ) from error
    if style == "positional":
        return style, tuple(range(len(upstreams)))
    return style, _positional_order(list(parameters.values()), upstreams)


def _positional_order(
    parameters: Sequence[inspect.Parameter], upstreams: Sequence[str]
) -> tuple[int, ...] | None:
    """Upstream positions in the order ``fn``'s leading parameters name them, when those are
    exactly the upstreams and can be passed positionally (``def f(b, a)`` over upstreams
    ``a, b`` gives ``(1, 0)``); binding by position is then identical to binding by name."""
    where = {name: i for i, name in enumerate(upstreams)}
    leading = parameters[: len(upstreams)]
    if len(leading) < len(upstreams) or any(
        p.kind is not p_pos_kw or p.name not in where for p in leading
    ):
        return None
    return tuple(where[p.name] for p in leading)


def _from_code(
    fn: Callable[..., Any], upstreams: Sequence[str], params: Mapping[str, Any]
) -> tuple[CallStyle, tuple[int, ...] | None] | None:
    """:func:`call_style` of a plain Python function from its code object, deciding as
    :func:`inspect.signature` and ``Signature.bind`` do; ``None`` for any other callable
    (methods, partials, ``functools.wraps`` wrappers, objects) and for a function that cannot
    be bound, so that the slow path decides and words the error."""
    if type(fn) is not FunctionType:
        return None
    attributes = fn.__dict__
    if attributes and ("__wrapped__" in attributes or "__signature__" in attributes):
        return None
    code = fn.__code__
    posonly, count = code.co_posonlyargcount, code.co_argcount
    positional = code.co_varnames[:count]
    keyword_only = code.co_varnames[count : count + code.co_kwonlyargcount]
    takes_kwargs = bool(code.co_flags & CO_VARKEYWORDS)
    required = positional[: count - len(fn.__defaults__ or ())]
    optional_keywords = fn.__kwdefaults__ or {}
    by_name = {*positional[posonly:], *keyword_only}  # the parameters a keyword can fill
    keyword = bool(upstreams) and (takes_kwargs or all(name in by_name for name in upstreams))
    if keyword:
        if set(upstreams) & set(params):
            return None
        given = [*upstreams, *params]  # every argument by keyword
        positionally: set[str] = set()
    else:
        if len(upstreams) > count and not code.co_flags & CO_VARARGS:
            return None  # too many positional arguments
        positionally = set(positional[: len(upstreams)])
        if positionally & set(params) & by_name:
            return None  # a value for one parameter both by position and by keyword
        given = list(params)
    if not takes_kwargs and any(name not in by_name for name in given):
        return None  # an unknown or positional-only name passed by keyword (**kw takes both)
    filled = positionally | {name for name in given if name in by_name}
    if any(name not in filled for name in required):
        return None  # a required parameter gets no value
    if any(name not in filled and name not in optional_keywords for name in keyword_only):
        return None  # a required keyword-only parameter gets no value
    if not keyword:
        return "positional", tuple(range(len(upstreams)))
    where = {name: i for i, name in enumerate(upstreams)}
    leading = positional[: len(upstreams)]
    if len(leading) < len(upstreams) or posonly or any(name not in where for name in leading):
        return "keyword", None
    return "keyword", tuple(where[name] for name in leading)


p_kw = inspect.Parameter.KEYWORD_ONLY
p_pos_kw = inspect.Parameter.POSITIONAL_OR_KEYWORD


def make_call(
    fn: Callable[..., Any],
    upstreams: Sequence[str],
    params: Mapping[str, Any],
    order: tuple[int, ...] | None,
) -> Callable[..., Any]:
    """``call(*values)`` that calls ``fn`` with upstream ``values`` given positionally in
    upstream order. With the upstreams in ``fn``'s parameter order and no params this is ``fn``
    itself: nothing stands between an engine and the user's function."""
    kwargs = dict(params)
    if order is None:  # only keywords bind (``**kwargs``, keyword-only parameters)
        names = tuple(upstreams)
        return lambda *values: fn(**dict(zip(names, values, strict=True)), **kwargs)
    if order == tuple(range(len(order))):
        return functools.partial(fn, **kwargs) if kwargs else fn
    pick = operator.itemgetter(*order)  # a permutation of two or more upstreams
    if kwargs:
        return lambda *values: fn(*pick(values), **kwargs)
    return lambda *values: fn(*pick(values))


def make_invoker(
    fn: Callable[..., Any],
    upstreams: Sequence[str],
    params: Mapping[str, Any],
    order: tuple[int, ...] | None,
) -> Invoker:
    """``invoke(values)`` that calls ``fn`` with upstream ``values`` (a sequence in upstream
    order). Its ``call`` attribute is the :func:`make_call` form, which engines use to skip
    building the sequence."""
    call = make_call(fn, upstreams, params, order)
    if call is fn and len(upstreams) == 1:
        invoke: Invoker = lambda values: fn(values[0])  # noqa: E731
    elif call is fn:
        invoke = lambda values: fn(*values)  # noqa: E731
    else:
        invoke = lambda values: call(*values)  # noqa: E731
    invoke.call = call  # type: ignore[attr-defined]
    return invoke


def positional_call(invoke: Invoker) -> Callable[..., Any]:
    """``call(*values)`` equivalent to ``invoke(values)``: the one :func:`make_invoker` attached,
    or a wrapper for any other invoker (an engine's or the Analyzer's replacement)."""
    call = getattr(invoke, "call", None)
    if callable(call):
        return call  # type: ignore[no-any-return]
    return lambda *values: invoke(values)
