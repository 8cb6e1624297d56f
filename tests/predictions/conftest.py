"""Shared fixtures of the prediction tests.

The API tests use the ``api`` fixture of ``tests/api``. Gradient boosting runs on one
OpenMP thread here: the test machine's cores are shared with other processes, and OpenMP
threads spinning for busy cores made a one-second fit take minutes.
"""

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from tests.api.conftest import api  # noqa: F401


@pytest.fixture(autouse=True)
def one_openmp_thread() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="openmp"):
        yield
