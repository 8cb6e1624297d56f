"""Predictions API: fit the models, rescore, and read the registry (parameters, backtest figures).

Scores the models write are stored scores (``profiles/scores.py``): segments read them as
``computed("churn_probability") > 0.7`` and profiles list them under ``scores``.
A fit runs in the background (minutes at a million customers): ``POST /fit`` checks the
request and answers 202 with a fit id at once; ``GET /fits/{fit_id}`` shows it queued,
running (with the models fitted so far), done or failed (``predictions/jobs.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from opencdp.errors import TerminalError
from opencdp.predictions import registry, run
from opencdp.predictions.jobs import FitJobs
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1/predictions", tags=["predictions"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]


class FitRequest(BaseModel):
    """Which models to fit and, optionally, settings for this fit only (defaults: ``predictions_*`` settings)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(None, description=f"models to fit, of {', '.join(run.MODELS)}; default: all")
    now: dt.datetime | None = Field(None, description="fit on the history up to this time (default: now)")
    horizon_days: int | None = None
    churn_days: int | None = None
    clv_months: int | None = None
    clv_monthly_discount: float | None = None
    vip_window_days: int | None = None
    vip_horizon_days: int | None = None
    min_customers: int | None = None
    replenishment_lapse_days: int | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    now: dt.datetime | None = None


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _now(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise run.PredictionError("`now` needs a time zone, e.g. 2026-12-01T00:00:00Z", field="now")
    return value


@router.get("", summary="Each model's latest fit: status, parameters, backtest figures, scores written")
def status(request: Request, principal: Reader) -> Any:
    latest = registry.latest(_backend(request))
    return {"models": [latest[m].to_dict() if m in latest else {"model": m, "status": "never fitted"} for m in run.MODELS]}


@router.get("/{model}/fits", summary="The fits of one model, newest first")
def fits(request: Request, principal: Reader, model: str, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Any:
    run.check_models([model])
    return {"fits": [entry.to_dict() for entry in registry.history(_backend(request), model)[:limit]]}


class FitNotFound(TerminalError):
    status = 404
    code = "fit_not_found"


def _jobs(request: Request) -> FitJobs:
    jobs = getattr(request.app.state, "prediction_jobs", None)
    if not isinstance(jobs, FitJobs):  # an app used without its lifespan (tests) starts them on first use
        jobs = request.app.state.prediction_jobs = FitJobs(_backend(request))
    return jobs


@router.post("/fit", status_code=202, summary="Start fitting models in the background (202 with a fit id)")
def fit(request: Request, response: Response, principal: Writer, body: FitRequest | None = None) -> Any:
    """Checks the request (422 naming a bad parameter) and queues the fit; poll ``GET /fits/{fit_id}``."""
    body = body or FitRequest()
    models = run.check_models(body.models) if body.models is not None else None
    overrides = body.model_dump(exclude={"models", "now"}, exclude_none=True)
    options = run.Options.from_settings(request.app.state.settings, **overrides)
    job = _jobs(request).submit(models, _now(body.now), options)
    response.headers["Location"] = f"{router.prefix}/fits/{job.id}"
    return job.to_dict()


@router.get("/fits", summary="The background fits this server ran or is running, newest first")
def fit_jobs(request: Request, principal: Reader) -> Any:
    return {"fits": [job.to_dict() for job in _jobs(request).list()]}


@router.get("/fits/{fit_id}", summary="How a background fit goes: queued, running, done or failed, with its models' fits")
def fit_job(request: Request, principal: Reader, fit_id: str) -> Any:
    job = _jobs(request).get(fit_id)
    if job is None:
        raise FitNotFound(
            f"no fit `{fit_id}` on this server (fits are kept in memory: after a restart read "
            "GET /api/v1/predictions/{model}/fits)",
            field="fit_id",
        )
    return job.to_dict()


@router.post("/score", summary="Rescore the current history with the last fitted models (no refit)")
def score(request: Request, principal: Writer, body: ScoreRequest | None = None) -> Any:
    body = body or ScoreRequest()
    results = run.score(_backend(request), body.models, now=_now(body.now))
    return {"scores": [r.to_dict() for r in results]}


def start_refits(app: Any, backend: Backend, settings: Any) -> Callable[[], None]:
    """Start the scheduled refit when ``predictions_refit_interval_s`` > 0, and the background fits' queue;
    returns what stops both (at shutdown)."""
    jobs = app.state.prediction_jobs = FitJobs(backend)
    interval = float(getattr(settings, "predictions_refit_interval_s", 0) or 0)
    if interval <= 0:
        app.state.prediction_refits = None
        return jobs.stop
    scheduler = run.RefitScheduler(backend, interval)
    app.state.prediction_refits = scheduler
    scheduler.start()

    def stop() -> None:
        scheduler.stop()
        jobs.stop()

    return stop
