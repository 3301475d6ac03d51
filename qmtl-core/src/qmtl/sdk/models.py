"""Seed import path: ``from qmtl.sdk.models import IntervalSettings, PipelineDefinition, ...``."""

from qmtl.models import (
    AnalyzerResult,
    HistoryItem,
    IntervalEnum,
    IntervalSettings,
    NodeDefinition,
    NodeStreamSettings,
    PipelineDefinition,
    QmtlModel,
    QueryNodeDefinition,
    QueryNodeResultSelector,
)

__all__ = [
    "AnalyzerResult",
    "HistoryItem",
    "IntervalEnum",
    "IntervalSettings",
    "NodeDefinition",
    "NodeStreamSettings",
    "PipelineDefinition",
    "QmtlModel",
    "QueryNodeDefinition",
    "QueryNodeResultSelector",
]
