"""A third-party QMTL engine: independent branches of the DAG run on a thread pool.

Select it with ``pipeline.execute(engine="threads")`` or ``QMTL_ENGINE=threads``.
"""

from qmtl_engine_threads.engine import ThreadPoolEngine, ThreadsEngineSettings

__all__ = ["ThreadPoolEngine", "ThreadsEngineSettings"]
