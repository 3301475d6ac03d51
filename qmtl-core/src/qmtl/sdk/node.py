"""Seed import path: ``from qmtl.sdk.node import Node, QueryNode, SourceProcessor, ...``."""

from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode
from qmtl.sources import SourceProcessor

__all__ = ["Node", "ProcessingNode", "QueryNode", "SourceNode", "SourceProcessor"]
