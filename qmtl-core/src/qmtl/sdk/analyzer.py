"""Seed import path: ``from qmtl.sdk.analyzer import Analyzer``."""

from qmtl.analyzer import Analyzer

__all__ = ["Analyzer"]
