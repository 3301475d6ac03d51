"""qmtl.testing's engine contract, run against the installed ``threads`` plugin.

``engine = "threads"`` selects the engine by kind, so this also proves the entry point is
installed and resolves. The oracle is the local engine's code on memory state.
"""

from __future__ import annotations

from qmtl.testing.engine_contract import EngineContract


class TestThreadsEngine(EngineContract):
    engine = "threads"
