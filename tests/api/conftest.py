from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencdp.config import Settings
from opencdp.storage.base import Backend
from opencdp.web.app import create_app


@dataclass
class Api:
    client: TestClient
    backend: Backend
    write_key: str
    admin_key: str

    @property
    def auth(self) -> dict[str, str]:
        return basic(self.write_key)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        if body is not None and "content" not in kwargs:
            kwargs["json"] = body
        return self.client.post(path, headers=headers, **kwargs)

    def flush(self) -> None:
        self.client.app.state.collector.flush()  # type: ignore[attr-defined]

    def events(self) -> list[dict[str, Any]]:
        self.flush()
        return self.backend.rows("SELECT * FROM events ORDER BY timestamp, message_id")

    def quarantine(self) -> list[dict[str, Any]]:
        self.flush()
        return self.backend.rows("SELECT * FROM quarantine ORDER BY received_at, position")


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", **overrides)


@pytest.fixture
def api(backend: Backend, tmp_path: Path) -> Iterator[Api]:
    app = create_app(make_settings(tmp_path, loader_interval_s=3600), backend=backend)
    with TestClient(app) as client:
        _, write_key = app.state.keys.create("write", "website")
        _, admin_key = app.state.keys.create("admin", "tests")
        yield Api(client, backend, write_key, admin_key)
