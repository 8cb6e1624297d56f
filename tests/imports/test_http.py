"""POST /api/v1/imports/{kind}: the file as the body, the report as the answer."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencdp.config import Settings
from opencdp.storage.base import Backend
from opencdp.web import imports
from opencdp.web.app import create_app

CUSTOMERS = b"customer_id,E-mail,phone\nC1,Ivan@Mail.RU,8 (912) 345-67-89\nC2,bad,\n"


@dataclass
class Client:
    http: TestClient
    admin: dict[str, str]
    data_dir: Path

    def post(self, path: str, body: bytes, **kwargs: Any) -> Any:
        headers = {**self.admin, **kwargs.pop("headers", {})}
        return self.http.post(path, content=body, headers=headers, **kwargs)


@pytest.fixture
def client(backend: Backend, tmp_path: Path) -> Iterator[Client]:
    settings = Settings(data_dir=tmp_path / "data", loader_interval_s=3600)
    app = create_app(settings, backend=backend, fsync=False)
    if not any(getattr(route, "path", "").startswith("/api/v1/imports") for route in app.routes):
        app.include_router(imports.router)
    with TestClient(app) as http:
        _, admin_key = app.state.keys.create("admin", "test")
        yield Client(http, {"Authorization": f"Bearer {admin_key}"}, settings.data_dir)


def test_upload_imports_and_answers_the_report_with_rejects(client: Client, backend: Backend) -> None:
    response = client.post(
        "/api/v1/imports/customers",
        CUSTOMERS,
        params={"filename": "crm export.csv", "mapping": json.dumps({"email": "E-mail"})},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["rows_read"], body["events_written"], body["rejected"]) == ("customers", 2, 1, 1)
    assert body["rejects"] == [
        {
            "line": 3,
            "error": "invalid_email",
            "field": "E-mail",
            "detail": "column `E-mail` (email): 'bad' is not a valid e-mail address; write it as name@example.com",
            "row": {"customer_id": "C2", "E-mail": "bad", "phone": ""},
        }
    ]
    [event] = backend.rows("SELECT user_id, traits FROM events")
    assert event["user_id"] == "C1"
    assert json.loads(event["traits"]) == {"email": "ivan@mail.ru", "phone": "+79123456789"}
    [reject] = backend.rows("SELECT source FROM quarantine")
    assert reject["source"] == "import:customers:crm_export.csv"
    uploads = list((client.data_dir / "imports").rglob("*"))
    assert [p.name for p in uploads if p.is_file()] == ["crm_export.rejects.csv"]  # the upload itself is gone

    again = client.post("/api/v1/imports/customers", CUSTOMERS, params={"format": "csv", "mapping": '{"email": "E-mail"}'})
    assert (again.json()["events_written"], again.json()["duplicates"]) == (0, 1)


def test_gzip_body(client: Client) -> None:
    response = client.post(
        "/api/v1/imports/customers",
        gzip.compress(b"customer_id\nC1\nC2\n"),
        params={"format": "csv"},
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200 and response.json()["events_written"] == 2


@pytest.mark.parametrize(
    ("path", "params", "field", "fragment"),
    [
        ("/api/v1/imports/people", {"format": "csv"}, "kind", "use one of customers, orders, catalog, events"),
        ("/api/v1/imports/customers", {"format": "xlsx"}, "format", "use one of csv, parquet, jsonl"),
        ("/api/v1/imports/customers", {}, "format", "pass format= one of csv, parquet, jsonl"),
        ("/api/v1/imports/customers", {"format": "csv", "mapping": "{"}, "mapping", "not valid JSON"),
        ("/api/v1/imports/customers", {"format": "csv", "mapping": '{"emial": "x"}'}, "emial", "unknown target(s) emial"),
    ],
)
def test_bad_parameters_are_400_naming_them(client: Client, path: str, params: dict[str, str], field: str, fragment: str) -> None:
    response = client.post(path, CUSTOMERS, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and fragment in response.json()["detail"]


def test_unreadable_file_and_size_limit(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    response = client.post("/api/v1/imports/orders", b"a,b\n1,2\n", params={"format": "csv"})
    assert response.status_code == 400 and "missing required column(s) for orders" in response.json()["detail"]

    settings = client.http.app.state.settings  # type: ignore[attr-defined]
    if hasattr(settings, "max_import_bytes"):
        monkeypatch.setattr(settings, "max_import_bytes", 10)
    else:
        monkeypatch.setattr(imports, "DEFAULT_MAX_IMPORT_BYTES", 10)
    response = client.post("/api/v1/imports/customers", CUSTOMERS, params={"format": "csv"})
    assert response.status_code == 413 and "max_import_bytes" in response.json()["detail"]


def test_requires_an_admin_key(client: Client) -> None:
    response = client.http.post("/api/v1/imports/customers", content=CUSTOMERS, params={"format": "csv"})
    assert response.status_code == 401


def test_a_whole_mapping_can_be_sent(client: Client, backend: Backend) -> None:
    from opencdp.ingest.imports import Mapping, Options

    mapping = Mapping(columns={"customer_id": "Код"}, defaults={"country": "RU"}, options=Options(delimiter=";"))
    body = "Код;Город\nK1;Тверь\n".encode()
    response = client.post("/api/v1/imports/customers", body, params={"format": "csv", "mapping": json.dumps(mapping.to_dict())})
    assert response.status_code == 200, response.text
    [row] = backend.rows("SELECT traits FROM events")
    assert json.loads(row["traits"]) == {"country": "RU", "Город": "Тверь"}
