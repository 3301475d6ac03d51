"""Seed import path: ``from qmtl.sdk.node import Node, QueryNode, ...``."""

from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode

__all__ = ["Node", "ProcessingNode", "QueryNode", "SourceNode"]
