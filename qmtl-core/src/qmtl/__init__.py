"""QMTL: write a strategy once as a DAG of tagged, interval-aware nodes; run it anywhere."""

from qmtl.errors import QmtlError
from qmtl.hookspecs import hookimpl

__all__ = ["QmtlError", "hookimpl"]
