"""A pipeline's members, and a node as one pipeline sees it.

Nodes are the user's objects (SPEC §4.2): building a pipeline never writes into them, and one
node may belong to several pipelines. What differs from one pipeline to another — the effective
stream settings (defaults merged), the node id (which covers them and the upstreams' ids) and a
query node's matches — belongs to the pipeline, and is read through a :class:`NodeView`:

- ``pipeline.nodes[name]`` and ``pipeline.query_nodes[name]`` are views of that pipeline
  (``isinstance(view, Node)`` holds, attributes and methods are the node's, assignments go to
  the node, ``view == node``);
- the node object itself answers ``stream_settings``, ``node_id`` and a query's ``upstreams``
  for the pipeline it was last added to (the seed reads ``node.stream_settings`` after
  ``add_node``), or for none. For that, ``add_node`` records a weak reference to the pipeline
  in the node: the only thing a pipeline keeps in a node, and nothing it computes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from qmtl.models import NodeStreamSettings

T = TypeVar("T")


class Facts(Protocol):
    """What a pipeline (or a plan) knows about its members, by name."""

    def settings_of(self, name: str) -> NodeStreamSettings | None:
        """Effective stream settings of a member."""
        ...

    def node_id_of(self, name: str) -> str:
        """A member's node id."""
        ...

    def upstreams_of(self, name: str) -> list[str]:
        """A member's upstreams (a query node's: its matches)."""
        ...


class Home(Facts, Protocol):
    """A pipeline, as its members see it."""

    def holds(self, member: object) -> bool:
        """Whether ``member`` (the object itself) is one of the pipeline's members."""
        ...

    def known(self, name: str) -> bool:
        """Whether the facts of ``name`` are at hand without building (the plan is built)."""
        ...


class FactTable:
    """:class:`Facts` from tables (a plan's, or a plan being compiled)."""

    __slots__ = ("ids", "settings", "upstreams")

    def __init__(
        self,
        settings: Mapping[str, NodeStreamSettings | None],
        ids: Mapping[str, str],
        upstreams: Mapping[str, list[str]],
    ) -> None:
        self.settings = settings
        self.ids = ids
        self.upstreams = upstreams

    def settings_of(self, name: str) -> NodeStreamSettings | None:
        return self.settings[name]

    def node_id_of(self, name: str) -> str:
        return self.ids[name]

    def upstreams_of(self, name: str) -> list[str]:
        return list(self.upstreams[name])


class PlanFacts:
    """:class:`Facts` read from a plan's nodes (``by_name``: name -> plan node)."""

    __slots__ = ("by_name",)

    def __init__(self, by_name: Mapping[str, Any]) -> None:
        self.by_name = by_name

    def settings_of(self, name: str) -> NodeStreamSettings | None:
        return self.by_name[name].settings  # type: ignore[no-any-return]

    def node_id_of(self, name: str) -> str:
        return self.by_name[name].node_id  # type: ignore[no-any-return]

    def upstreams_of(self, name: str) -> list[str]:
        return list(self.by_name[name].upstreams)


def raw_members(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """The user's objects of ``pipeline.nodes`` (a :class:`Members`, or a plain mapping
    someone assigned)."""
    return mapping.raw() if isinstance(mapping, Members) else mapping


def join(member: Any, pipeline: Home) -> None:
    """Record that ``member`` now belongs to ``pipeline`` (a weak reference, most recent last)."""
    refs: list[weakref.ref[Any]] = [
        ref
        for ref in getattr(member, "_pipelines", ())
        if ref() is not None and ref() is not pipeline
    ]
    refs.append(weakref.ref(pipeline))
    member._pipelines = refs


def home(member: Any) -> Home | None:
    """The pipeline ``member`` was last added to and still belongs to, if any."""
    for ref in reversed(getattr(member, "_pipelines", ())):
        pipeline = ref()
        if pipeline is not None and pipeline.holds(member):
            return pipeline  # type: ignore[no-any-return]
    return None


class Member:
    """Base of nodes and query nodes: what :func:`join` records is not copied or pickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_pipelines", None)  # weak references to pipelines
        return state


class SeenInPipeline(Generic[T]):
    """A member's attribute that differs from one pipeline to another (settings, node id,
    matches): read from the pipeline the member was last added to (once it is built, when
    ``built`` is set), else from ``fallback(member)``. Assigning calls ``store(member, value)``:
    the member's own (declared) value."""

    def __init__(
        self,
        fact: Callable[[Home, str], T],
        fallback: Callable[[Any], T],
        store: Callable[[Any, Any], None] | None = None,
        *,
        built: bool = True,
    ) -> None:
        self.fact, self.fallback, self.store, self.built = fact, fallback, store, built

    @overload
    def __get__(self, member: None, owner: type) -> SeenInPipeline[T]: ...
    @overload
    def __get__(self, member: object, owner: type) -> T: ...
    def __get__(self, member: object, owner: type) -> T | SeenInPipeline[T]:
        if member is None:
            return self
        pipeline = home(member)
        name: str = member.name  # type: ignore[attr-defined]
        if pipeline is not None and (not self.built or pipeline.known(name)):
            return self.fact(pipeline, name)
        return self.fallback(member)

    def __set__(self, member: object, value: Any) -> None:
        if self.store is None:
            raise AttributeError("this attribute is computed by the pipeline")
        self.store(member, value)


class NodeView:
    """A node (or query node) as one pipeline sees it; see the module docstring."""

    __slots__ = ("_facts", "_node")
    _node: Any
    _facts: Facts

    def __init__(self, node: Any, facts: Facts) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_facts", facts)

    # isinstance(view, Node) and type checks by class see the node's class
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._node)

    @property
    def node(self) -> Any:
        """The user's node object."""
        return self._node

    @property
    def stream_settings(self) -> NodeStreamSettings | None:
        """Effective stream settings in this pipeline."""
        return self._facts.settings_of(self._node.name)

    @property
    def node_id(self) -> str:
        """Node id in this pipeline (builds the pipeline when it is not built yet)."""
        return self._facts.node_id_of(self._node.name)

    @property
    def upstreams(self) -> list[str]:
        """Upstream names; a query node's matches in this pipeline."""
        if self._node.kind == "query":
            return self._facts.upstreams_of(self._node.name)
        return self._node.upstreams  # type: ignore[no-any-return]

    @property
    def matched(self) -> list[str]:
        """A query node's matches in this pipeline."""
        return self._facts.upstreams_of(self._node.name)

    @property
    def intervals(self) -> list[Any]:
        settings = self.stream_settings
        return list(settings.intervals) if settings else []

    def to_definition(self) -> dict[str, Any]:
        """The node's definition in this pipeline."""
        return self._node.definition(self)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._node, name, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NodeView):
            other = object.__getattribute__(other, "_node")
        return other is self._node

    def __hash__(self) -> int:
        return id(self._node)

    def __repr__(self) -> str:
        return repr(self._node)


class Members(MutableMapping[str, Any]):
    """A pipeline's name → node mapping: reads give :class:`NodeView`\\ s of the pipeline,
    direct assignment (``pipeline.nodes[name] = node``) adds a member (validated when the
    pipeline is built), and every change tells the pipeline."""

    __slots__ = ("_changed", "_items", "_on_delete", "_on_set", "_pipeline")

    def __init__(
        self,
        pipeline: Home,
        changed: Callable[[], None],
        *,
        on_set: Callable[[str, Any], None] | None = None,
        on_delete: Callable[[str], None] | None = None,
    ) -> None:
        self._items: dict[str, Any] = {}
        self._pipeline = pipeline
        self._changed = changed
        #: told of every member set and removed (the pipeline's tag index)
        self._on_set, self._on_delete = on_set, on_delete

    def raw(self) -> dict[str, Any]:
        """The members themselves (the user's objects), by name."""
        return self._items

    def __getitem__(self, key: str) -> Any:
        return NodeView(self._items[key], self._pipeline)

    def __setitem__(self, key: str, value: Any) -> None:
        if type(value) is NodeView:  # another pipeline's view: keep the user's node
            value = object.__getattribute__(value, "_node")
        self._items[key] = value
        if hasattr(value, "__dict__"):
            join(value, self._pipeline)
        if self._on_set is not None:
            self._on_set(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        if self._on_delete is not None:
            self._on_delete(key)
        self._changed()

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __repr__(self) -> str:
        return repr(self._items)
