"""Fitting every model on a simulated shop, on every engine: scores stored under the fit's
version for canonical profiles only, usable in segments; the registry keeps the figures and
the model (rescoring without a refit gives the same values); too little history writes
nothing and leaves the previous scores; the scheduler refits when due."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from opencdp.config import Settings
from opencdp.predictions import registry, run
from opencdp.profiles.scores import read_scores, score_info, score_names
from opencdp.segments import store
from opencdp.segments.sql import members
from opencdp.segments.text import parse
from opencdp.storage.base import Backend
from tests.predictions import shop

OPTIONS = run.Options(min_customers=100)
NUMBER_SCORES = {
    "expected_purchases_30d", "probability_alive", "expected_order_value", "clv", "purchase_probability_30d",
    "churn_probability", "vip_probability",
}  # fmt: skip
TEXT_SCORES = {"next_order_date", "replenishment_due", "replenishment_product"}


def values(backend: Backend, name: str) -> dict[str, object]:
    table = read_scores(backend, name)
    return dict(zip(table.column("profile_id").to_pylist(), table.column("value").to_pylist(), strict=True))


def test_fit_stores_every_score_and_segments_read_them(backend: Backend) -> None:
    ids = shop.load(backend)
    fits = run.fit(backend, now=shop.NOW, options=OPTIONS)
    assert [(f.model, f.status) for f in fits] == [(m, "fitted") for m in run.MODELS], [f.message for f in fits]
    assert set(score_names(backend)) == NUMBER_SCORES | TEXT_SCORES
    for name in NUMBER_SCORES | TEXT_SCORES:
        scored = values(backend, name)
        assert scored and set(scored) <= set(ids), name  # canonical ids only: not c0-old, not the anonymous buyer
    for name in ("probability_alive", "purchase_probability_30d", "churn_probability", "vip_probability"):
        assert all(0.0 <= v <= 1.0 for v in values(backend, name).values())  # type: ignore[operator]
    assert "c0" in values(backend, "clv") and all(v >= 0 for v in values(backend, "clv").values())  # type: ignore[operator]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(v)) for v in values(backend, "next_order_date").values())
    due = values(backend, "replenishment_due")
    assert all(str(v) >= (shop.NOW - dt.timedelta(days=30)).date().isoformat() for v in due.values())  # lapsed ones dropped
    assert shop.REFILL in set(values(backend, "replenishment_product").values())  # learned from repeat purchases

    # the registry: figures of the backtest beside the baseline, the scores' version is the fit's
    latest = registry.latest(backend)
    churn = latest["churn"]
    assert churn.scores == {"churn_probability": len(values(backend, "churn_probability"))}
    assert 0.5 < churn.metrics["auc"] <= 1 and "baseline_auc" in churn.metrics and "lift_top_decile" in churn.metrics
    assert score_info(backend, "churn_probability").model_version == churn.model_version  # type: ignore[union-attr]
    clv = latest["clv"]
    assert {"r", "alpha", "a", "b", "p", "q", "gamma"} <= set(clv.params) and clv.metrics["holdout_customers"] > 0

    # predictive segments: churn probability above a level and CLV above another, as the issue writes it
    churn_p, clv_v = values(backend, "churn_probability"), values(backend, "clv")
    line = sorted(clv_v.values())[len(clv_v) // 2]  # type: ignore[type-var]
    expected = {p for p, v in churn_p.items() if v > 0.5 and clv_v.get(p, 0) > line}  # type: ignore[operator]
    assert expected, "the simulated shop should have valuable customers at risk"
    text = f"computed.churn_probability > 0.5 and computed.clv > {line}"
    assert members(backend, parse(text), shop.NOW) == expected
    saved, warnings = store.save(backend, "valuable_at_risk", definition=text, now=shop.NOW)
    assert warnings == [] and members(backend, saved.tree, shop.NOW) == expected  # type: ignore[arg-type]

    # dates are ISO text: "due within a week" is a text comparison
    week = (shop.NOW + dt.timedelta(days=7)).date().isoformat()
    soon = {p for p, v in values(backend, "next_order_date").items() if str(v) <= week}
    assert soon and members(backend, parse(f'computed.next_order_date <= "{week}"'), shop.NOW) == soon

    # rescoring with the stored models (no refit) gives the same values under a new version
    before = values(backend, "purchase_probability_30d")
    rescored = run.score(backend, ["purchase", "vip"], now=shop.NOW)
    assert [r.status for r in rescored] == ["scored", "scored"]
    assert score_info(backend, "purchase_probability_30d").model_version != latest["purchase"].model_version  # type: ignore[union-attr]
    assert values(backend, "purchase_probability_30d") == pytest.approx(before)


def test_too_little_history_writes_nothing_and_keeps_the_previous_scores(backend: Backend) -> None:
    shop.load(backend, customers=200)
    early = shop.START + dt.timedelta(days=20)  # three weeks of history: a few dozen customers
    fits = run.fit(backend, now=early, options=OPTIONS)
    # replenishment is a rule over the catalogue's lifetimes, not a statistical fit: it needs no minimum
    assert {f.model: f.status for f in fits} == {m: "fitted" if m == "replenishment" else "failed" for m in run.MODELS}
    messages = {f.model: str(f.message) for f in fits}
    assert "at least 100" in messages["clv"] and "purchase in 30 days" in messages["purchase"]
    assert all(not f.scores for f in fits if f.status == "failed")
    assert set(score_names(backend)) == {"replenishment_due", "replenishment_product"}
    assert [e.status for e in registry.history(backend, "clv")] == ["failed"]
    # a model that did fit keeps its scores when a later fit fails
    assert run.fit(backend, ["clv"], now=shop.NOW, options=OPTIONS)[0].status == "fitted"
    kept, version = values(backend, "clv"), registry.current(backend, "clv").model_version  # type: ignore[union-attr]
    again = run.fit(backend, ["clv"], now=early, options=OPTIONS)[0]
    assert again.status == "failed" and values(backend, "clv") == kept
    assert registry.current(backend, "clv").model_version == version  # type: ignore[union-attr]
    assert registry.latest(backend)["clv"].model_version == again.model_version


def test_bad_parameters_name_the_parameter(backend: Backend) -> None:
    with pytest.raises(run.PredictionError) as unknown:
        run.fit(backend, ["clv", "lifetime"])
    assert unknown.value.field == "models" and "'lifetime'" in unknown.value.detail
    with pytest.raises(run.PredictionError) as horizon:
        run.Options.from_settings(None, horizon_days=0)
    assert horizon.value.field == "horizon_days"
    with pytest.raises(run.PredictionError) as never:
        run.score(backend, ["churn"])
    assert never.value.field == "models" and "never fitted" in never.value.detail


def test_the_scheduler_refits_when_due(backend: Backend) -> None:
    shop.load(backend, customers=300)
    backend.settings = Settings(predictions_models=["clv"], predictions_min_customers=100)
    clock = [shop.NOW]
    scheduler = run.RefitScheduler(backend, 3600, clock=lambda: clock[0])
    assert scheduler.due()
    assert [f.model for f in scheduler.tick()] == ["clv"]
    assert scheduler.tick() == []  # just fitted (the registry's newest fit is recent)
    clock[0] = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert scheduler.due()
