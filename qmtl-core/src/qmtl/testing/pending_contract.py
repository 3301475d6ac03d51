"""The pending-store contract (:mod:`qmtl.pending`): fencing, atomic saves, expiry, records.

Subclass :class:`PendingStoreContract` and provide a fresh store through the ``store``
fixture; pytest collects the inherited tests::

    class TestRedisPending(PendingStoreContract):
        @pytest.fixture
        def store(self, redis_url):
            backend = RedisStateBackend(url=redis_url)
            yield backend.pending_store()
            backend.close()

Every test uses its own random scope, so a shared server is safe.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

__all__ = ["PendingStoreContract"]


class PendingStoreContract:
    """Inherit and override the ``store`` fixture."""

    @pytest.fixture
    def scope(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}/0"

    def test_a_save_is_read_back_field_by_field(self, store: Any, scope: str) -> None:
        store.claim(scope, "me")
        assert store.load(scope, "run:a") == {}
        assert store.save(scope, "me", {"run:a": {"s1": b"one", "s2": b"\x00\xff"}})
        assert store.save(scope, "me", {"run:a": {"s2": b"two"}, "offset": {"next": b"42"}})
        assert store.load(scope, "run:a") == {"s1": b"one", "s2": b"two"}
        assert store.load(scope, "offset") == {"next": b"42"}

    def test_a_previous_owner_is_fenced_out_once_another_claims(
        self, store: Any, scope: str
    ) -> None:
        store.claim(scope, "zombie")
        assert store.save(scope, "zombie", {"offset": {"next": b"10"}})
        store.claim(scope, "new-owner")  # the partition moved while the zombie was paused
        assert not store.save(scope, "zombie", {"offset": {"next": b"12"}, "run:x": {"f": b"1"}})
        assert store.load(scope, "offset") == {"next": b"10"}
        assert store.load(scope, "run:x") == {}  # nothing of a refused save is written
        assert store.save(scope, "new-owner", {"offset": {"next": b"20"}})
        assert store.load(scope, "offset") == {"next": b"20"}

    def test_dropped_parts_go_in_the_same_save(self, store: Any, scope: str) -> None:
        store.claim(scope, "me")
        store.save(scope, "me", {"run:a": {"s1": b"x"}})
        assert store.save(scope, "me", {"end:a": {"at": b"1"}}, drop=["run:a"])
        assert store.load(scope, "run:a") == {}
        assert store.load(scope, "end:a") == {"at": b"1"}

    def test_parts_expire_after_their_ttl_without_a_save(self, store: Any, scope: str) -> None:
        store.claim(scope, "me")
        store.save(scope, "me", {"run:a": {"s": b"x"}}, ttl=1)
        assert store.load(scope, "run:a") == {"s": b"x"}
        time.sleep(2.1)
        assert store.load(scope, "run:a") == {}

    def test_remember_keeps_the_first_value_and_note_replaces(self, store: Any, scope: str) -> None:
        assert store.recall(scope, "layout") is None
        assert store.remember(scope, "layout", "P=4") == "P=4"
        assert store.remember(scope, "layout", "P=8") == "P=4"
        store.note(scope, "live", "ns-a", 60)
        store.note(scope, "live", "ns-b", 60)
        assert store.recall(scope, "live") == "ns-b"
        assert store.recall(scope, "layout") == "P=4"

    def test_forget_deletes_a_scope_and_nothing_else(self, store: Any, scope: str) -> None:
        other = scope + "-other"
        for name in (scope, other):
            store.claim(name, "me")
            store.save(name, "me", {"run:a": {"s": b"x"}})
            store.remember(name, "layout", "P=2")
        store.forget(scope)
        assert store.load(scope, "run:a") == {} and store.recall(scope, "layout") is None
        assert not store.save(scope, "me", {"offset": {"next": b"1"}})  # its claim went too
        assert store.load(other, "run:a") == {"s": b"x"}
        assert store.recall(other, "layout") == "P=2"
