"""The in-process pending store passes the pending-store contract."""

from __future__ import annotations

import pytest

from qmtl.pending import MemoryPendingStore, SharesPendingState
from qmtl.state import MemoryStateBackend
from qmtl.testing.pending_contract import PendingStoreContract


class TestMemoryPendingStore(PendingStoreContract):
    @pytest.fixture
    def store(self) -> MemoryPendingStore:
        return MemoryPendingStore()


def test_the_memory_backend_does_not_claim_to_share_pending_state() -> None:
    assert not isinstance(MemoryStateBackend(), SharesPendingState)
    assert MemoryPendingStore.shared is False
