"""Error messages name nodes by their names (issue 13 item 8).

A node's id is a 64-hex content hash: in a message it tells the user nothing. Every ``raise`` in
the five packages is read statically: no formatted value of an exception's message may be a
node id (an expression mentioning ``node_id``). State backends know a series only by its key;
the engines and the history API re-raise their errors naming the node, which the behavioural
tests below check.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import StateBackendError
from qmtl.state import MemoryStateBackend, SeriesKey

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    path
    for package in (
        "qmtl-core",
        "qmtl-engine-local",
        "qmtl-engine-kafka",
        "qmtl-state-redis",
        "qmtl-deploy",
    )
    for path in (ROOT / package / "src").rglob("*.py")
)


def ids_in_messages(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
            continue
        for arg in [*node.exc.args, *(k.value for k in node.exc.keywords)]:
            for part in ast.walk(arg):
                if isinstance(part, ast.FormattedValue) and _is_an_id(part.value):
                    found.append(f"{path}:{node.lineno}: {ast.unparse(part)}")
    return found


def _is_an_id(expression: ast.expr) -> bool:
    """``node_id``, ``key.node_id``, ``node.node_id[:8]``: the value shown is an id (a
    lookup such as ``owners[node_id]`` shows what it maps to, a name)."""
    while isinstance(expression, ast.Subscript) and isinstance(expression.slice, ast.Slice):
        expression = expression.value
    if isinstance(expression, ast.Attribute):
        return expression.attr == "node_id"
    return isinstance(expression, ast.Name) and expression.id == "node_id"


def test_no_error_message_formats_a_node_id() -> None:
    assert len(SOURCES) > 50
    found = [line for path in SOURCES for line in ids_in_messages(path)]
    assert found == [], "messages naming a node by its id:\n" + "\n".join(found)


def test_the_check_finds_a_message_built_from_an_id(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(key, owners, node_id):\n"
        "    if key:\n"
        '        raise ValueError(f"no data for {key.node_id}")\n'
        '    raise ValueError(f"{owners[node_id]} and {node_id[:8]}")\n'
    )
    assert sorted(hit.rpartition(": ")[2] for hit in ids_in_messages(bad)) == [
        "{key.node_id}",
        "{node_id[:8]}",
    ]


class FullDisk(MemoryStateBackend):
    """A backend whose writes fail, as a real one's would with its key in the message."""

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        raise StateBackendError(f"disk full writing series {key.node_id[:8]}…")

    def read(self, key: SeriesKey, **kwargs: Any) -> list[dict[str, Any]]:
        raise StateBackendError("server went away")


def _pipeline() -> Pipeline:
    p = Pipeline("named")
    p.add_node(
        SourceNode(
            "px", source=[(60.0, 1.0), (120.0, 2.0)], interval_settings={"1m": {"period": 5}}
        )
    )
    p.add_node(
        Node(
            "twice", fn=lambda px: px * 2, upstreams=["px"], interval_settings={"1m": {"period": 5}}
        )
    )
    return p


@pytest.mark.parametrize("form", ["execute", "run"])
def test_a_failing_write_names_the_node(form: str) -> None:
    p = _pipeline()
    with pytest.raises(StateBackendError, match=r"Node 'px' at 1m: disk full"):
        if form == "execute":
            p.execute(engine="mock", state=FullDisk(), ts=60)
        else:
            p.run(engine="mock", state=FullDisk())


def test_a_failing_read_names_the_node() -> None:
    p = _pipeline()
    for read in (p.get_history, p.get_interval_data, p.get_node_metadata):
        state = FullDisk()
        state.metadata = lambda key: (_ for _ in ()).throw(  # type: ignore[method-assign]
            StateBackendError("server went away")
        )
        with pytest.raises(StateBackendError, match=r"Node 'twice' at 1m: server went away"):
            read("twice", "1m", state=state)
