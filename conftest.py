"""Root pytest configuration: service fixtures for integration tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["qmtl.testing.services"]

#: Fixtures that hand a test a real service: a test using one is an integration test.
SERVICE_FIXTURES = {"redis_url", "kafka_bootstrap"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture ``integration``, so unit-test runs
    (``-m "not integration"``: make floors, make pythons) leave it out even when its author
    forgot the marker, instead of failing it under ``CI=true`` for want of a broker."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
