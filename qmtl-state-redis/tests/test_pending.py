"""The Redis backend declares the pending-state capability and passes its contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qmtl.pending import SharesPendingState
from qmtl.testing.pending_contract import PendingStoreContract
from qmtl_state_redis import RedisStateBackend

pytestmark = pytest.mark.integration


class TestRedisPendingStore(PendingStoreContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[Any]:
        backend = RedisStateBackend(url=redis_url)
        yield backend.pending_store()
        backend.close()


def test_the_redis_backend_declares_the_capability(redis_url: str) -> None:
    backend = RedisStateBackend(url=redis_url)
    assert isinstance(backend, SharesPendingState)
    assert backend.pending_store().shared is True
    backend.close()


def test_pending_keys_share_one_cluster_slot_and_stay_out_of_the_history(redis_url: str) -> None:
    import redis

    backend = RedisStateBackend(url=redis_url)
    store = backend.pending_store()
    scope = "qmtl.shard.slots-test/3"
    store.claim(scope, "t")
    store.save(scope, "t", {"run:a": {"s": b"1"}, "offset": {"next": b"5"}})
    client = redis.Redis.from_url(redis_url)
    keys = sorted(
        k.decode() for k in client.scan_iter(match="qmtl-pending:{qmtl.shard.slots-test/3}:*")
    )
    assert keys == [
        "qmtl-pending:{qmtl.shard.slots-test/3}:owner",
        "qmtl-pending:{qmtl.shard.slots-test/3}:p:offset",
        "qmtl-pending:{qmtl.shard.slots-test/3}:p:run:a",
    ]
    assert backend.delete("qmtl.shard.slots-test") == 0  # history deletion leaves them alone
    client.delete(*keys)
    client.close()
    backend.close()
