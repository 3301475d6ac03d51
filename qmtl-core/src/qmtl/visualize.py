"""Drawing a pipeline: Mermaid, Graphviz DOT, JSON, and SVG/PNG through Graphviz's ``dot``.

The graph is the compiled plan (so query matches and effective intervals are shown): every node
with its tags and intervals (``1d/p7`` = interval 1d, period 7), data edges ``upstream → node``,
and query nodes drawn distinctly (a hexagon, yellow) with dashed "match" edges from the nodes
they matched — dotted, grey "not selected" edges from matches their own selectors leave out
(known when the selection is deterministic). Rendering needs no display; SVG and PNG run the
``dot`` program of Graphviz (``apt install graphviz`` / ``brew install graphviz``) and fail
with :class:`VisualizationError` when it is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from qmtl.errors import QmtlError
from qmtl.selectors import is_deterministic, select

if TYPE_CHECKING:
    from qmtl.node import QueryNode
    from qmtl.plan import ExecutionPlan, PlanNode

FORMATS = ("mermaid", "dot", "json", "svg", "png")


class Drawable(Protocol):
    """What is drawn: a :class:`qmtl.pipeline.Pipeline` (its name, tags and compiled plan)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def tags(self) -> list[str]: ...
    def build(self) -> ExecutionPlan: ...


class VisualizationError(QmtlError):
    """A pipeline could not be drawn (unknown format, Graphviz missing or failing)."""


def graph(pipeline: Drawable) -> dict[str, Any]:
    """The pipeline's graph as plain data (what ``format="json"`` prints)."""
    plan = pipeline.build()
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for node in plan.nodes:
        entry: dict[str, Any] = {
            "name": node.name,
            "kind": node.kind,
            "node_id": node.node_id,
            "tags": list(node.tags),
            "intervals": [
                {"interval": s.interval.value, "period": s.period, "max_history": s.max_items}
                for s in node.series
            ],
            "upstreams": list(node.upstreams),
        }
        if node.kind == "query":
            query = cast("QueryNode", node.node)
            entry.update(
                query_tags=list(query.query_tags),
                match_mode=query.match_mode,
                interval=query.interval.value if query.interval else None,
                period=query.period,
                matches=list(node.upstreams),
                selectors=[
                    s.model_dump(mode="json", exclude_none=True) for s in query.result_selectors
                ],
                selected=_selected(plan, node),
            )
            chosen = entry["selected"]
            edges.extend(
                {
                    "source": u,
                    "target": node.name,
                    "kind": "match" if chosen is None or u in chosen else "unselected",
                }
                for u in node.upstreams
            )
        else:
            edges.extend({"source": u, "target": node.name, "kind": "data"} for u in node.upstreams)
        nodes.append(entry)
    return {
        "pipeline": pipeline.name,
        "type": pipeline.type,
        "tags": list(pipeline.tags),
        "nodes": nodes,
        "edges": edges,
    }


def _selected(plan: ExecutionPlan, node: PlanNode) -> list[str] | None:
    """The matches the query's own selectors keep, or ``None`` when drawn at each evaluation
    (an unseeded random step)."""
    query = node.node
    selectors = query.result_selectors  # type: ignore[union-attr]
    if not is_deterministic(selectors):
        return None
    matched = [plan.view(u) for u in node.upstreams]
    return list(select(selectors, matched).names)


def _intervals(entry: dict[str, Any]) -> str:
    return ", ".join(f"{i['interval']}/p{i['period']}" for i in entry["intervals"])


def _query_line(entry: dict[str, Any]) -> str:
    joiner = " & " if entry["match_mode"] == "all" else " | "
    text = "query: " + joiner.join(entry["query_tags"])
    if entry["interval"]:
        text += f" @{entry['interval']}"
    if entry["period"]:
        text += f" p{entry['period']}"
    return text


def _lines(entry: dict[str, Any]) -> list[str]:
    lines = [entry["name"]]
    if entry["kind"] == "query":
        lines.append(_query_line(entry))
        if entry["selectors"]:
            lines.append("select: " + " → ".join(s["mode"] for s in entry["selectors"]))
    elif entry["tags"]:
        lines.append("tags: " + ", ".join(entry["tags"]))
    if entry["intervals"]:
        lines.append(_intervals(entry))
    return lines


def to_mermaid(data: dict[str, Any]) -> str:
    """A Mermaid ``flowchart``: query nodes are hexagons, match edges dashed."""
    ids = {entry["name"]: f"n{i}" for i, entry in enumerate(data["nodes"])}
    out = ["flowchart LR"]
    for entry in data["nodes"]:
        label = "<br/>".join(_mermaid_text(line) for line in _lines(entry))
        if entry["kind"] == "query":
            out.append(f'    {ids[entry["name"]]}{{{{"{label}"}}}}:::query')
        elif not entry["upstreams"]:
            out.append(f'    {ids[entry["name"]]}(["{label}"]):::source')
        else:
            out.append(f'    {ids[entry["name"]]}["{label}"]')
    arrows = {"match": "-. match .->", "unselected": "-. not selected .-x", "data": "-->"}
    for edge in data["edges"]:
        out.append(f"    {ids[edge['source']]} {arrows[edge['kind']]} {ids[edge['target']]}")
    out.append("    classDef query fill:#fff4c2,stroke:#b8860b,stroke-dasharray:4 2")
    out.append("    classDef source fill:#e8f1ff,stroke:#3b6fb6")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def to_dot(data: dict[str, Any]) -> str:
    """Graphviz DOT: query nodes are yellow hexagons, match edges dashed."""
    out = [
        f"digraph {_dot_id(data['pipeline'])} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for entry in data["nodes"]:
        label = "\\n".join(_dot_text(line) for line in _lines(entry))
        if entry["kind"] == "query":
            style = 'shape=hexagon, style="filled,dashed", fillcolor="#fff4c2", color="#b8860b"'
        elif not entry["upstreams"]:
            style = 'fillcolor="#e8f1ff", color="#3b6fb6"'
        else:
            style = 'color="#444444"'
        out.append(f'  {_dot_id(entry["name"])} [label="{label}", {style}];')
    styles = {
        "match": ' [style=dashed, color="#b8860b", label="match"]',
        "unselected": ' [style=dotted, color="#aaaaaa", label="not selected", arrowhead=tee]',
        "data": "",
    }
    for edge in data["edges"]:
        out.append(
            f"  {_dot_id(edge['source'])} -> {_dot_id(edge['target'])}{styles[edge['kind']]};"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_id(name: str) -> str:
    return f'"{_dot_text(name)}"'


def _graphviz(dot_source: str, fmt: str, pipeline: str) -> bytes:
    program = shutil.which("dot")
    if program is None:
        raise VisualizationError(
            f"Drawing pipeline '{pipeline}' as {fmt.upper()} needs Graphviz's 'dot' program, "
            "which is not on PATH: install Graphviz (apt install graphviz, brew install "
            "graphviz), or use format='dot', 'mermaid' or 'json'"
        )
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"],
            input=dot_source.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise VisualizationError(
            f"Running {program} for pipeline '{pipeline}' failed: {error}"
        ) from error
    if done.returncode != 0:
        raise VisualizationError(
            f"Graphviz failed to draw pipeline '{pipeline}' as {fmt.upper()} "
            f"(exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def render(pipeline: Drawable, format: str = "mermaid", path: str | Path | None = None) -> str:
    """Draw ``pipeline``; return the text (Mermaid, DOT, JSON, SVG) or the written path (PNG).

    With ``path`` the output is also written there and the path is returned for SVG/PNG.
    PNG needs ``path``.
    """
    fmt = format.lower()
    if fmt not in FORMATS:
        raise VisualizationError(f"Unknown graph format {format!r}; use one of {list(FORMATS)}")
    if fmt == "png" and path is None:
        raise VisualizationError(
            f"Drawing pipeline '{pipeline.name}' as PNG needs path= (a file to write)"
        )
    data = graph(pipeline)
    if fmt == "json":
        text = json.dumps(data, indent=2) + "\n"
    elif fmt == "mermaid":
        text = to_mermaid(data)
    else:
        text = to_dot(data)
    if fmt in ("svg", "png"):
        image = _graphviz(text, fmt, pipeline.name)
        if path is not None:
            Path(path).write_bytes(image)
            return str(path)
        return image.decode()
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def notebook_svg(pipeline: Drawable) -> str | None:
    """SVG of the graph when Graphviz's ``dot`` is installed and the pipeline builds, else None."""
    if shutil.which("dot") is None:
        return None
    try:
        return render(pipeline, format="svg")
    except QmtlError:
        return None  # the bundle's text says why


def notebook_bundle(
    pipeline: Drawable, include: Iterable[str] | None, exclude: Iterable[str] | None
) -> dict[str, str]:
    """Jupyter's MIME bundle of a pipeline: SVG (with Graphviz), Mermaid in Markdown, text.

    A pipeline that does not build shows its plain repr and the error instead of a graph.
    """
    bundle = {"text/plain": repr(pipeline)}
    try:
        mermaid = render(pipeline, format="mermaid")
    except QmtlError as error:
        bundle["text/plain"] += f"\n(cannot draw it: {error})"
        return bundle
    bundle["text/markdown"] = f"```mermaid\n{mermaid}```\n"
    svg = notebook_svg(pipeline)
    if svg is not None:
        bundle["image/svg+xml"] = svg
    wanted = set(include) if include is not None else set(bundle)
    unwanted = set(exclude or ())
    return {k: v for k, v in bundle.items() if k in wanted and k not in unwanted}


__all__ = [
    "FORMATS",
    "VisualizationError",
    "graph",
    "notebook_bundle",
    "notebook_svg",
    "render",
    "to_dot",
    "to_mermaid",
]
