"""The local engine passes the engine contract (its oracle is the same core, run alone)."""

from __future__ import annotations

from qmtl.testing.engine_contract import EngineContract
from qmtl_engine_local import LocalExecutionEngine


class TestLocalEngineContract(EngineContract):
    engine = LocalExecutionEngine


class TestLocalEngineByKind(EngineContract):
    """Selected by kind through the plugin registry, as users do."""

    engine = "local"
    state = "memory"
    max_examples = 5
