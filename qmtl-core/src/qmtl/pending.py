"""Pending state: what a distributed engine keeps between batches, next to the history.

A distributed engine's worker saves, after every batch, the state its streaming objects hold
(open buckets, windows, watermarks) together with the position it reached in its input, so
whichever process takes the input over next continues exactly there. That state must be
visible to every worker process and *fenced*: a worker that was paused while its input moved to
another (a "zombie") must not overwrite the new owner's state.

A state backend that can keep such state declares it by offering ``pending_store()``
(:class:`SharesPendingState`); engines choose by this capability, never by a backend's name.
The Redis backend offers it (one Lua call per save, in the same Redis as the history); a
backend without it still serves in-process runs, whose pending state stays in the process
(:class:`MemoryPendingStore`).

The model: a *scope* (for example one partition of a Kafka topic) is owned by one *token* at a
time (:meth:`PendingStore.claim`); it holds named *parts*, each a mapping of field to bytes. A
:meth:`PendingStore.save` writes parts and drops others atomically, and only while the caller's
token still owns the scope. Parts expire after ``ttl`` seconds without a save, so an abandoned
run's state goes away by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

__all__ = ["DEFAULT_TTL", "MemoryPendingStore", "PendingStore", "SharesPendingState"]

#: Seconds a part lives without being saved again: a week.
DEFAULT_TTL = 7 * 24 * 3600


class PendingStore(Protocol):
    """Fenced, durable parts grouped in scopes (see the module docstring)."""

    #: Visible to other processes (and machines): what external workers need.
    shared: bool

    def claim(self, scope: str, token: str) -> None:
        """Make ``token`` the owner of ``scope``; saves with any other token fail from now on."""
        ...

    def load(self, scope: str, part: str) -> dict[str, bytes]:
        """The fields of ``part`` in ``scope`` (empty when there is none)."""
        ...

    def save(
        self,
        scope: str,
        token: str,
        parts: Mapping[str, Mapping[str, bytes]],
        drop: Iterable[str] = (),
        ttl: int = DEFAULT_TTL,
    ) -> bool:
        """Atomically drop the parts ``drop`` and write the fields of ``parts``, if ``token``
        still owns ``scope``; ``False`` (and nothing written) when another token claimed it
        (or nobody has)."""
        ...

    def remember(self, scope: str, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless a value is there already; return the stored
        one (how an engine records a layout once and checks later runs against it)."""
        ...

    def note(self, scope: str, name: str, value: str, ttl: int) -> None:
        """Store ``value`` under ``name`` for ``ttl`` seconds, replacing what was there."""
        ...

    def recall(self, scope: str, name: str) -> str | None:
        """What :meth:`remember` or :meth:`note` stored under ``name`` (``None``: nothing)."""
        ...

    def forget(self, scope: str) -> None:
        """Delete everything of ``scope``: its owner, parts and records."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class SharesPendingState(Protocol):
    """The capability: a state backend that keeps pending state for workers anywhere."""

    def pending_store(self) -> PendingStore:
        """A store next to this backend's history (shared by every process using it)."""
        ...


class MemoryPendingStore:
    """Pending state in this process: threads of one engine share it; nothing else can."""

    shared = False

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._parts: dict[tuple[str, str], tuple[dict[str, bytes], float]] = {}
        self._names: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = time.monotonic

    def claim(self, scope: str, token: str) -> None:
        with self._lock:
            self._owners[scope] = token

    def load(self, scope: str, part: str) -> dict[str, bytes]:
        with self._lock:
            found = self._parts.get((scope, part))
            if found is None or found[1] < self._clock():
                return {}
            return dict(found[0])

    def save(
        self,
        scope: str,
        token: str,
        parts: Mapping[str, Mapping[str, bytes]],
        drop: Iterable[str] = (),
        ttl: int = DEFAULT_TTL,
    ) -> bool:
        until = self._clock() + ttl
        with self._lock:
            if self._owners.get(scope) != token:
                return False
            for part in drop:
                self._parts.pop((scope, part), None)
            for part, fields in parts.items():
                held = self._parts.get((scope, part))
                merged = dict(held[0]) if held is not None else {}
                merged.update(fields)
                self._parts[(scope, part)] = (merged, until)
        return True

    def remember(self, scope: str, name: str, value: str) -> str:
        with self._lock:
            held = self._names.setdefault((scope, name), (value, float("inf")))
            return held[0]

    def note(self, scope: str, name: str, value: str, ttl: int) -> None:
        with self._lock:
            self._names[(scope, name)] = (value, self._clock() + ttl)

    def recall(self, scope: str, name: str) -> str | None:
        with self._lock:
            held = self._names.get((scope, name))
            return None if held is None or held[1] < self._clock() else held[0]

    def forget(self, scope: str) -> None:
        with self._lock:
            self._owners.pop(scope, None)
            for key in [k for k in self._parts if k[0] == scope]:
                del self._parts[key]
            for key in [k for k in self._names if k[0] == scope]:
                del self._names[key]

    def close(self) -> None:
        """Nothing to release."""
