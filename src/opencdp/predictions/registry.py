"""The model registry: every fit of every prediction model, kept in ``prediction_fits``.

A row records what a fit saw (``data_until``), what it found (``params``), how good it is
(``metrics``), which scores it wrote, and — pickled — the fitted model itself, so that new
data can be scored without refitting. Failed fits are recorded too (status ``failed``, with
the message), so ``opencdp predict status`` shows why a score is missing or old.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.predictions.model import Fitted
from opencdp.storage.base import Backend
from opencdp.storage.schema import PREDICTION_FITS

_SUMMARY_COLUMNS = tuple(c for c in PREDICTION_FITS.column_names if c != "artifact")


@dataclass
class FitRecord:
    """One registry row (without the pickled model)."""

    model: str
    model_version: str
    status: str
    fitted_at: dt.datetime
    data_until: dt.datetime
    seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_version": self.model_version,
            "status": self.status,
            "fitted_at": self.fitted_at.isoformat(),
            "data_until": self.data_until.isoformat(),
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "params": self.params,
            "metrics": self.metrics,
            "scores": self.scores,
            "message": self.message,
        }


def record(backend: Backend, entry: FitRecord, fitted: Fitted | None = None) -> None:
    artifact = base64.b64encode(pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)).decode() if fitted else None
    row = {
        "model": [entry.model],
        "model_version": [entry.model_version],
        "status": [entry.status],
        "fitted_at": [entry.fitted_at],
        "data_until": [entry.data_until],
        "seconds": [entry.seconds],
        "params": [json.dumps(entry.params, default=str)],
        "metrics": [json.dumps(entry.metrics, default=str)],
        "scores": [json.dumps(entry.scores)],
        "message": [entry.message],
        "artifact": [artifact],
    }
    backend.insert(PREDICTION_FITS.name, pa.table(row, schema=PREDICTION_FITS.arrow_schema))


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def history(backend: Backend, model: str | None = None) -> list[FitRecord]:
    """Fits, newest first (of one model, or all)."""
    query = exp.select(*_SUMMARY_COLUMNS).from_(backend.table_ref(PREDICTION_FITS))
    if model is not None:
        query = query.where(exp.column("model").eq(exp.Literal.string(model)))
    records = [
        FitRecord(
            model=row["model"],
            model_version=row["model_version"],
            status=row["status"],
            fitted_at=_utc(row["fitted_at"]),
            data_until=_utc(row["data_until"]),
            seconds=row["seconds"],
            params=json.loads(row["params"] or "{}"),
            metrics=json.loads(row["metrics"] or "{}"),
            scores=json.loads(row["scores"] or "{}"),
            message=row["message"],
        )
        for row in backend.rows(query)
    ]
    return sorted(records, key=lambda r: (r.fitted_at, r.model_version), reverse=True)


def latest(backend: Backend) -> dict[str, FitRecord]:
    """The newest fit of each model, whatever its status."""
    found: dict[str, FitRecord] = {}
    for entry in history(backend):
        found.setdefault(entry.model, entry)
    return found


def current(backend: Backend, model: str) -> FitRecord | None:
    """The newest successful fit of ``model``: the one whose scores are in use."""
    return next((r for r in history(backend, model) if r.status == "fitted"), None)


def load_model(backend: Backend, entry: FitRecord) -> Fitted:
    """The pickled model of a fit (written by this process's ``record``: the store is trusted)."""
    query = (
        exp.select("artifact")
        .from_(backend.table_ref(PREDICTION_FITS))
        .where(
            exp.and_(
                exp.column("model").eq(exp.Literal.string(entry.model)),
                exp.column("model_version").eq(exp.Literal.string(entry.model_version)),
            )
        )
    )
    text = backend.scalar(query)
    if not text:
        raise LookupError(f"fit {entry.model_version} of {entry.model} has no stored model")
    fitted: Fitted = pickle.loads(base64.b64decode(text))
    return fitted
