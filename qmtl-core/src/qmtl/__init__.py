"""QMTL: write a strategy once as a DAG of tagged, interval-aware nodes; run it anywhere.

Importing QMTL has no side effects: plugins load, settings are read and connections open only
when a pipeline runs or a CLI command starts.
"""

from qmtl.errors import QmtlError
from qmtl.hookspecs import hookimpl
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeStreamSettings,
    PipelineDefinition,
    QueryNodeResultSelector,
)
from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode
from qmtl.pipeline import Pipeline

__all__ = [
    "IntervalEnum",
    "IntervalSettings",
    "Node",
    "NodeStreamSettings",
    "Pipeline",
    "PipelineDefinition",
    "ProcessingNode",
    "QmtlError",
    "QueryNode",
    "QueryNodeResultSelector",
    "SourceNode",
    "hookimpl",
]
