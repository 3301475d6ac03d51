"""examples/streaming_strategy.py runs and shows what `make run` promises."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "streaming_strategy.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("streaming_strategy_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_streaming_example_prints_signals_and_bars(capsys: pytest.CaptureFixture[str]) -> None:
    module = _example()
    module.main()
    out = capsys.readouterr().out
    assert "7920 price events" in out
    assert "Last signals:" in out and "Recent 1d closes:" in out


def test_the_example_bars_and_signal_follow_the_streaming_rules() -> None:
    module = _example()
    pipeline = module.build()
    summary = pipeline.run(engine="local", state="memory")
    hours = module.DAYS * 24
    # every symbol has a close in every hour; momentum needs 6 hourly closes (warm-up)
    assert summary.nodes["AAPL"].buckets_out == {"1m": 4320, "1h": hours, "1d": module.DAYS}
    assert summary.nodes["NVDA_momentum"].buckets_out == {"1h": hours - module.MOMENTUM_HOURS + 1}
    assert summary.nodes["signal"].buckets_out == {"1h": hours - module.MOMENTUM_HOURS + 1}
    last = pipeline.get_history("signal", "1h", count=1)[0]["value"]
    moves = {
        s: pipeline.get_history(f"{s}_momentum", "1h", count=1)[0]["value"] for s in module.SYMBOLS
    }
    assert last["long"] == max(moves, key=moves.__getitem__)
    assert last["short"] == min(moves, key=moves.__getitem__)
