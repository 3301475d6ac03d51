"""Seed-compatible import paths (``qmtl.sdk.pipeline``, ``qmtl.sdk.node``, ...).

Deployment helpers (``container``, ``K8sJobGenerator``) live in qmtl-deploy and are resolved on
first use, with an error naming the package to install when it is missing.
"""

from __future__ import annotations

from typing import Any

from qmtl.analyzer import Analyzer
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeDefinition,
    NodeStreamSettings,
    PipelineDefinition,
    QueryNodeDefinition,
    QueryNodeResultSelector,
)
from qmtl.node import Node, ProcessingNode, QueryNode, SourceNode
from qmtl.pipeline import Pipeline

__all__ = [
    "Analyzer",
    "IntervalEnum",
    "IntervalSettings",
    "K8sJobGenerator",
    "Node",
    "NodeDefinition",
    "NodeStreamSettings",
    "Pipeline",
    "PipelineDefinition",
    "ProcessingNode",
    "QueryNode",
    "QueryNodeDefinition",
    "QueryNodeResultSelector",
    "SourceNode",
    "container",
]

_DEPLOY = {"container": "qmtl_deploy.container", "K8sJobGenerator": "qmtl_deploy"}


def __getattr__(name: str) -> Any:
    if name not in _DEPLOY:
        raise AttributeError(f"module 'qmtl.sdk' has no attribute {name!r}")
    from qmtl._lazy import import_from

    module = import_from(_DEPLOY[name], "qmtl-deploy", f"qmtl.sdk.{name}")
    return module if name == "container" else getattr(module, name)
