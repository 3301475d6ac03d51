"""The Analyzer: a pipeline whose query nodes run one analysis over every matching node.

Work in progress (issue 3): this version runs the DAG through the engine and returns
``{query: {node: value}}``.
"""

from __future__ import annotations

from typing import Any

from qmtl.pipeline import Pipeline


class Analyzer(Pipeline):
    """A pipeline tagged ``ANALYZER`` whose result is ``{query: {node: value}}``."""

    type = "analyzer"

    def __init__(self, name: str = "analyzer", *args: Any, tags: Any = None, **kwargs: Any) -> None:
        super().__init__(name, *args, tags=["ANALYZER", *(t for t in tags or () if t != "ANALYZER")],
                         **kwargs)
        self.results_cache: dict[str, dict[str, Any]] = {}
