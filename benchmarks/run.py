"""Run every benchmark (``benchmarks/bench_*.py``) and print one JSON table.

Each module defines ``run() -> dict`` returning flat figures measured side by side in one run.
``python benchmarks/run.py [name ...]`` runs a subset. Benchmarks that need Kafka or Redis read
QMTL_TEST_KAFKA_BOOTSTRAP / QMTL_TEST_REDIS_URL (``make bench`` starts both).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    table: dict[str, object] = {}
    failed = False
    for path in sorted(here.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if names and name not in names:
            continue
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            figures = module.run()
        except Exception as error:  # report and continue with the other benchmarks
            figures = {"error": f"{type(error).__name__}: {error}"}
            failed = True
        figures["bench_seconds"] = round(time.perf_counter() - started, 2)
        table[name] = figures
    print(json.dumps(table, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
