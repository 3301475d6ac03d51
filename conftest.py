"""Root pytest configuration: service fixtures for integration tests."""

pytest_plugins = ["qmtl.testing.services"]
