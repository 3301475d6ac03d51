"""Seed import path: ``from qmtl.sdk.visualization import visualize_pipeline``.

The earlier SDK drew the DAG with networkx and matplotlib in a window; QMTL renders text
(Mermaid, DOT, JSON) or image files (SVG, PNG through Graphviz), with no display needed:
:func:`qmtl.visualize.render`, also ``pipeline.visualize(...)`` and ``qmtl graph``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Never

from qmtl.errors import ConfigurationError
from qmtl.visualize import FORMATS, VisualizationError, graph, render

__all__ = ["FORMATS", "VisualizationError", "graph", "render", "visualize_pipeline"]


def visualize_pipeline(
    nodes: Any,
    pipeline_name: str | None = None,
    *,
    format: str = "mermaid",
    path: str | Path | None = None,
    **matplotlib_options: Never,
) -> str:
    """Draw a pipeline, or the seed's ``{name: node}`` mapping, as :func:`qmtl.visualize.render`
    does; returns the text (or the written path for PNG).

    The seed's matplotlib options (``figsize``, ``node_size``, ``node_color``, ``show``) have no
    meaning for text and Graphviz output and are refused with a ``ConfigurationError``.
    """
    if matplotlib_options:
        raise ConfigurationError(
            f"visualize_pipeline() does not take {sorted(matplotlib_options)}: QMTL renders "
            "Mermaid, DOT, JSON, SVG or PNG instead of a matplotlib window; pass format= "
            f"(one of {', '.join(FORMATS)}) and path= for a file"
        )
    from qmtl.pipeline import Pipeline

    if isinstance(nodes, Pipeline):
        pipeline = nodes
    elif isinstance(nodes, Mapping):
        pipeline = Pipeline(pipeline_name or "pipeline")
        for node in nodes.values():
            if getattr(node, "kind", None) == "query":
                pipeline.add_query_node(node)
            else:
                pipeline.add_node(node)
    else:
        raise ConfigurationError(
            f"visualize_pipeline() draws a Pipeline or a {{name: node}} mapping, not "
            f"{type(nodes).__name__}"
        )
    return render(pipeline, format=format, path=path)
