"""Reports API: ready reports as chart-ready JSON, RFM and interest scoring runs, BI views.

``GET /api/v1/reports`` lists the reports and their parameters; ``GET
/api/v1/reports/{name}?from=&to=&interval=day|week|month&...`` answers ``{"report",
"params", "series": [{"name", "points": [[x, y], ...]}], "table"}`` (``opencdp.analytics.reports``).
A bad or unknown parameter is a 422 whose ``field`` names it; a range without data gives
empty series. Scoring runs (``POST /api/v1/reports/rfm/score`` ...) store their results as
scores, usable in segments (``computed.rfm_cell = "at_risk"``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from opencdp.analytics import reports
from opencdp.analytics.params import ReportError, parse_time
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _params(request: Request) -> dict[str, Any]:
    """Query parameters; a repeated one becomes a list (``steps=a&steps=b``)."""
    found: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in found:
            found[key] = [*found[key], value] if isinstance(found[key], list) else [found[key], value]
        else:
            found[key] = value
    return found


def _as_of(request: Request) -> dt.datetime:
    raw = request.query_params.get("as_of")
    return parse_time(raw, "as_of") if raw else dt.datetime.now(dt.UTC)


@router.get("", summary="The ready reports and the parameters each takes")
def list_reports(principal: Reader) -> Any:
    return {"reports": reports.catalogue()}


@router.post("/rfm/score", summary="Score RFM (kind=orders|engagement) and store the cells as scores; writes cell-change events")
async def score_rfm(request: Request, principal: Writer) -> Any:
    from opencdp.analytics import rfm

    raw = _params(request)
    kind = str(raw.get("kind") or "orders")
    scoring = rfm.Scoring.from_settings(_backend(request).settings, method=raw.get("method") or None)
    result = await run_in_threadpool(rfm.run, _backend(request), _as_of(request), kind=kind, scoring=scoring)
    return result.to_dict()


@router.post("/interest/score", summary="Compute every profile's current room, finished rooms and next room; store them as scores")
async def score_interest(request: Request, principal: Writer) -> Any:
    from opencdp.analytics import interest

    return await run_in_threadpool(interest.store, _backend(request), _as_of(request))


@router.post("/value/score", summary="Store order count, average check, historic LTV and top room per profile as scores")
async def score_value(request: Request, principal: Writer) -> Any:
    from opencdp.analytics import cohorts

    return await run_in_threadpool(cohorts.store_value_scores, _backend(request), _as_of(request))


@router.get("/{name}", summary="One report as chart-ready JSON (series of [x, y] points, and a table)")
async def report(name: str, request: Request, principal: Reader) -> Any:
    raw = _params(request)
    raw.pop("as_of", None)
    if name not in reports.REPORTS:
        raise ReportError(f"no report `{name}`; reports: {', '.join(reports.REPORTS)}", field="name")
    return await run_in_threadpool(reports.run_report, _backend(request), name, raw, _as_of(request))


@router.post("/bi/views", summary="Create (or replace) the stable bi_* SQL views (docs/bi-views.md)")
async def bi_views(request: Request, principal: Admin) -> Any:
    from opencdp.analytics import views

    return {"views": await run_in_threadpool(views.create_views, _backend(request))}


@router.post("/bi/export", summary="Export the bi_* datasets to Parquet or CSV under a directory of the server's machine")
async def bi_export(request: Request, principal: Admin) -> Any:
    from pathlib import Path

    from opencdp.analytics import export

    raw = _params(request)
    if not raw.get("to"):
        raise ReportError("`to` is the directory to write into", field="to")
    datasets = raw.get("dataset")
    chosen = datasets if isinstance(datasets, list) else ([datasets] if datasets else None)
    return await run_in_threadpool(export.export, _backend(request), Path(str(raw["to"])), fmt=str(raw.get("format") or "parquet"),
                                   datasets=chosen)  # fmt: skip
