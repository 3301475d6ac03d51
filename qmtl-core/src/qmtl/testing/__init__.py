"""Test support for QMTL and its plugins: service fixtures and contract suites.

Nothing is imported here; use the submodules (``qmtl.testing.services`` is a pytest plugin that
the repository's root ``conftest.py`` loads).
"""
