"""The seed document's examples run as written (SPEC §11 lists the recorded differences)."""

from __future__ import annotations

import contextlib
import io

from readme_blocks import SEED_README, block_containing


def run_block(marker: str, namespace: dict | None = None) -> tuple[dict, str]:
    namespace = dict(namespace or {})
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(block_containing(SEED_README, marker), str(SEED_README), "exec"), namespace)
    return namespace, output.getvalue()


def test_serialisation_example() -> None:
    from qmtl.sdk.pipeline import Node, Pipeline

    # The block uses Pipeline and Node without importing them, as in the seed's own context.
    namespace, _ = run_block(
        "PipelineDefinition.from_definition", {"Pipeline": Pipeline, "Node": Node}
    )
    assert namespace["pipeline_def"].nodes[0].name == "A"


def test_local_engine_example_prints_the_results() -> None:
    namespace, printed = run_block("results = pipeline.execute(test_mode=True)")
    assert namespace["results"] == {"A": 42, "B": 84}
    assert printed.strip() == "{'A': 42, 'B': 84}"


def test_interval_period_policy_example() -> None:
    namespace, _ = run_block("default_intervals 적용")
    assert namespace["node1"].stream_settings.intervals["1d"].period == 14
    assert namespace["node2"].stream_settings.intervals["1d"].period == 30
