"""Seed import path: ``from qmtl.sdk.pipeline import Pipeline, Node, ProcessingNode, ...``."""

from qmtl.models import IntervalEnum, IntervalSettings, NodeStreamSettings
from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode
from qmtl.pipeline import Pipeline

__all__ = [
    "IntervalEnum",
    "IntervalSettings",
    "Node",
    "NodeStreamSettings",
    "Pipeline",
    "ProcessingNode",
    "QueryNode",
    "SourceNode",
]
