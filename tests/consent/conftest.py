"""The API tests' ``api`` fixture (a test app on each engine), for the consent API tests here."""

from __future__ import annotations

from tests.api.conftest import api

__all__ = ["api"]
