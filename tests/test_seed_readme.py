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


def test_the_module_paths_the_seed_readme_names_import() -> None:
    """Its structure section names execution/local.py, parallel_engine.py, state_manager.py,
    stream_processor.py and visualization.py; its class list, Analyzer in the sdk."""
    from qmtl.sdk import Analyzer
    from qmtl.sdk.execution.local import LocalExecutionEngine
    from qmtl.sdk.execution.parallel_engine import ParallelExecutionEngine
    from qmtl.sdk.execution.state_manager import StateManager
    from qmtl.sdk.execution.stream_processor import StreamProcessor
    from qmtl.sdk.visualization import visualize_pipeline
    from qmtl_engine_kafka import ParallelExecutionEngine as Kafka
    from qmtl_engine_kafka import StreamProcessor as Stream
    from qmtl_engine_local import LocalExecutionEngine as Local
    from qmtl_state_redis import StateManager as Manager

    assert (LocalExecutionEngine, ParallelExecutionEngine, StateManager, StreamProcessor) == (
        Local,
        Kafka,
        Manager,
        Stream,
    )
    from qmtl.sdk.pipeline import Node, Pipeline

    analyzer = Analyzer(name="paths")
    analyzer.add_node(Node(name="n1", fn=lambda: 1, tags=["A"]))
    assert "n1" in visualize_pipeline(analyzer)
    pipeline = Pipeline(name="seed-debug")
    pipeline.add_node(Node(name="A", fn=lambda: 42))
    assert pipeline.execute(test_mode=True, debug=True) == {"A": 42}
    assert LocalExecutionEngine(debug=True).execute_pipeline(pipeline) == {"A": 42}
