"""Predictions over HTTP, on both engines: bad parameters are 422s naming the parameter, too
little history is a 422 that writes nothing, a fit is listed with its figures and rescored."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from opencdp.predictions import registry, run
from opencdp.profiles.scores import score_names
from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import Api, make_settings
from tests.predictions import shop


def test_bad_parameters_are_422_naming_the_parameter(api: Api) -> None:
    cases = [
        ({"models": ["clv", "ltv"]}, "models"),
        ({"horizon_days": 0}, "horizon_days"),
        ({"clv_monthly_discount": 2}, "clv_monthly_discount"),
        ({"horizon": 30}, "horizon"),  # not a parameter
        ({"now": "2026-12-01T00:00:00"}, "now"),  # no time zone
        ({"min_customers": "many"}, "min_customers"),
    ]
    for body, field in cases:
        answer = api.client.post("/api/v1/predictions/fit", json=body, headers=api.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field, (body, answer.json())
    assert api.client.get("/api/v1/predictions/lifetime/fits", headers=api.admin).json()["field"] == "models"
    assert api.client.post("/api/v1/predictions/fit", json={}).status_code == 401


def test_too_little_history_is_a_422_and_writes_nothing(api: Api) -> None:
    answer = api.client.post("/api/v1/predictions/fit", json={"models": ["clv", "churn"]}, headers=api.admin)
    assert answer.status_code == 422 and answer.json()["error"] == "not_enough_history", answer.text
    assert "clv" in answer.json()["detail"] and score_names(api.backend) == {}
    models = {m["model"]: m for m in api.client.get("/api/v1/predictions", headers=api.admin).json()["models"]}
    assert models["clv"]["status"] == "failed" and models["vip"]["status"] == "never fitted"
    never = api.client.post("/api/v1/predictions/score", json={"models": ["clv"]}, headers=api.admin)
    assert never.status_code == 422 and never.json()["field"] == "models"


def test_fit_lists_figures_and_rescores(api: Api) -> None:
    shop.load(api.backend, customers=300)
    body = {"models": ["clv", "next_order"], "now": shop.NOW.isoformat(), "min_customers": 100}
    answer = api.client.post("/api/v1/predictions/fit", json=body, headers=api.admin)
    assert answer.status_code == 200, answer.text
    fits = {f["model"]: f for f in answer.json()["fits"]}
    assert fits["clv"]["status"] == "fitted" and fits["clv"]["params"]["r"] > 0
    assert fits["clv"]["scores"]["clv"] > 0 and "holdout_mae" in fits["clv"]["metrics"]
    listed = api.client.get("/api/v1/predictions/clv/fits", headers=api.admin).json()["fits"]
    assert [f["model_version"] for f in listed] == [fits["clv"]["model_version"]]
    rescored = api.client.post("/api/v1/predictions/score", json={"now": shop.NOW.isoformat()}, headers=api.admin)
    assert rescored.status_code == 200 and {s["model"] for s in rescored.json()["scores"]} == {"clv", "next_order"}
    scored = next(iter(fits["clv"]["scores"]))  # the 360-degree profile lists the scores
    assert scored == "expected_purchases_30d"
    profile = api.client.get("/api/v1/profiles/c1", headers=api.admin)
    assert profile.status_code == 200, profile.text
    assert 0 < profile.json()["scores"]["probability_alive"] <= 1


def test_the_server_starts_and_stops_the_scheduled_refit(backend: Backend, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, loader_interval_s=3600, predictions_refit_interval_s=3600), backend=backend)
    with TestClient(app):
        scheduler = app.state.prediction_refits
        assert isinstance(scheduler, run.RefitScheduler) and scheduler.interval_s == 3600
        for _ in range(100):  # the first refit is due at once: an empty store fails it, recorded
            if registry.latest(backend):
                break
            time.sleep(0.1)
        assert registry.latest(backend)["clv"].status == "failed"
    assert scheduler._stop.is_set()
