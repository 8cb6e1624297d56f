from tests.api.conftest import api  # noqa: F401  (the API test client fixture, for tests/privacy/test_api.py)
