"""Pytest plugin: a skipped test of a real-service marker is a failure.

A skip would hide that the service was not there; CI must see it. Loaded with ``-p``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

REAL_SERVICE_MARKERS = {"k8s", "kafka", "redis", "turn", "browser", "prometheus", "s3"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    markers = {m.name for m in item.iter_markers()} & REAL_SERVICE_MARKERS
    if report.skipped and markers and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"real-service test ({', '.join(sorted(markers))}) was skipped: {reason}"
