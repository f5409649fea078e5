"""The CI guard itself: skips of real-service tests fail, other skips stay skips."""

from __future__ import annotations

import pytest


def test_skipped_real_service_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n  redis: r\n  slow: s\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.redis
        def test_needs_redis():
            pytest.skip("redis not running")

        @pytest.mark.slow
        def test_other():
            pytest.skip("not a real-service test")
        """
    )
    result = pytester.runpytest("-p", "tests.realservices")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*real-service test (redis) was skipped*"])
