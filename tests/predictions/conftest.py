"""The API tests here use the ``api`` fixture of ``tests/api``."""

from tests.api.conftest import api  # noqa: F401
