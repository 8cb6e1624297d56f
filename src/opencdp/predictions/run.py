"""Fit the prediction models, store their scores, keep the registry — now or on a schedule.

``fit(backend, models)`` reads the history once, fits each model, writes its scores with
``write_scores`` (one version per fit: the scores' ``model_version`` is the registry's) and
records the fit. A model that cannot be fitted (too little history, one class only) is
recorded as failed with the reason and writes nothing, so the previous scores stay.
``score`` rescores fresh data with the last fitted models, without refitting.
``RefitScheduler`` is the thread the server starts when ``predictions_refit_interval_s`` > 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from opencdp.config import Settings
from opencdp.errors import TerminalError
from opencdp.predictions import registry
from opencdp.predictions.btyd import NotEnoughHistory
from opencdp.predictions.classifiers import fit_propensity
from opencdp.predictions.clv import fit_customer_value
from opencdp.predictions.features import snapshot
from opencdp.predictions.history import History, read_history
from opencdp.predictions.model import FitResult, Fitted, ScoreSet
from opencdp.predictions.nextorder import fit_next_order
from opencdp.predictions.registry import FitRecord
from opencdp.predictions.replenishment import fit_replenishment
from opencdp.predictions.vip import fit_vip
from opencdp.profiles.scores import write_scores
from opencdp.storage.base import Backend

log = logging.getLogger("opencdp.predictions")

MODELS = ("clv", "purchase", "churn", "next_order", "replenishment", "vip")
"""Model names, in the order a full fit runs them."""


class PredictionError(TerminalError):
    """A request for predictions that cannot be served as asked (unknown model, bad parameter)."""

    status = 422
    code = "invalid_prediction_request"


@dataclass(frozen=True)
class Options:
    """The knobs of a fit, from ``Settings`` (``predictions_*``), optionally overridden per call."""

    horizon_days: int = 30
    churn_days: int = 90
    clv_months: int = 12
    clv_monthly_discount: float = 0.01
    vip_window_days: int = 7
    vip_horizon_days: int = 90
    min_customers: int = 200
    replenishment_lapse_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings | None, **overrides: Any) -> Options:
        values: dict[str, Any] = {}
        if settings is not None:
            values = {name: getattr(settings, f"predictions_{name}") for name in cls.__dataclass_fields__}
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in cls.__dataclass_fields__:
                raise PredictionError(f"unknown parameter `{name}`", field=name)
            values[name] = value
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        limits = {
            "horizon_days": (1, 365), "churn_days": (1, 365), "clv_months": (1, 120), "vip_window_days": (1, 60),
            "vip_horizon_days": (7, 730), "min_customers": (10, 10**9), "replenishment_lapse_days": (0, 3650),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise PredictionError(f"`{name}` must be a whole number from {low} to {high}, not {value!r}", field=name)
        if not 0 <= self.clv_monthly_discount <= 1:
            raise PredictionError(
                f"`clv_monthly_discount` must be from 0 to 1 (0.01 is 1% a month), not {self.clv_monthly_discount!r}",
                field="clv_monthly_discount",
            )


def check_models(models: Sequence[str] | None, default: Sequence[str] = MODELS) -> list[str]:
    chosen = list(models) if models else list(default)
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        raise PredictionError(f"unknown model {unknown[0]!r}; models are {', '.join(MODELS)}", field="models")
    return [m for m in MODELS if m in chosen]


def _fit_one(model: str, history: History, options: Options) -> FitResult:
    o = options
    if model == "clv":
        return fit_customer_value(
            history, horizon_days=o.horizon_days, clv_months=o.clv_months, monthly_discount=o.clv_monthly_discount,
            min_customers=o.min_customers,
        )
    if model == "purchase":
        return fit_propensity(history, target="purchase", horizon_days=o.horizon_days, min_customers=o.min_customers)
    if model == "churn":
        return fit_propensity(history, target="churn", horizon_days=o.churn_days, min_customers=o.min_customers)
    if model == "next_order":
        return fit_next_order(history, min_customers=o.min_customers)
    if model == "replenishment":
        return fit_replenishment(history, lapse_days=o.replenishment_lapse_days)
    if model == "vip":
        return fit_vip(
            history, window_days=o.vip_window_days, horizon_days=o.vip_horizon_days, min_customers=o.min_customers
        )
    raise PredictionError(f"unknown model {model!r}", field="models")


def _write(backend: Backend, history: History, sets: list[ScoreSet], version: str, metrics: dict[str, Any]) -> dict[str, int]:
    """Store each score set under ``version``; the profiles each has."""
    written: dict[str, int] = {}
    for item in sets:
        ids = history.orders.ids.take(pa.array(item.customer, pa.int64()))
        if isinstance(item.values, pa.Array):
            values = item.values
        elif isinstance(item.values, list):
            values = pa.array(item.values)
        else:
            values = pa.array(np.asarray(item.values, dtype=np.float64))
        info = write_scores(
            backend, item.name, ids, values, model_version=version, metrics=metrics, description=item.description
        )
        written[item.name] = info.profiles
    return written


def _version(model: str, now: dt.datetime) -> str:
    return f"{model}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def fit(
    backend: Backend,
    models: Sequence[str] | None = None,
    *,
    now: dt.datetime | None = None,
    options: Options | None = None,
    progress: Callable[[FitRecord], None] | None = None,
) -> list[FitRecord]:
    """Fit ``models`` (default: ``Settings.predictions_models``) on the history up to ``now`` and store their scores.

    ``progress`` is called with each model's registry entry as soon as it is fitted (or failed).
    """
    settings = backend.settings if isinstance(backend.settings, Settings) else None
    chosen = check_models(models, settings.predictions_models if settings else MODELS)
    options = options or Options.from_settings(settings)
    now = now or dt.datetime.now(dt.UTC)
    history = read_history(backend, now, engagement_days=2 * max(options.horizon_days, options.churn_days) + 120)
    results = []
    for model in chosen:
        results.append(_fit_and_store(backend, model, history, options))
        if progress is not None:
            progress(results[-1])
    return results


def _fit_and_store(backend: Backend, model: str, history: History, options: Options) -> FitRecord:
    start = time.perf_counter()
    version = _version(model, dt.datetime.now(dt.UTC))
    entry = FitRecord(model, version, "failed", dt.datetime.now(dt.UTC), history.now)
    try:
        result = _fit_one(model, history, options)
        sets = result.fitted.score(history)
    except NotEnoughHistory as error:
        entry.message = error.detail
        entry.seconds = time.perf_counter() - start
        registry.record(backend, entry)
        log.warning("prediction model %s not fitted: %s", model, error.detail)
        return entry
    entry.params, entry.metrics = result.params, result.metrics
    entry.scores = _write(backend, history, sets, version, {"model": model, **result.metrics})
    entry.status = "fitted"
    entry.seconds = time.perf_counter() - start
    registry.record(backend, entry, result.fitted)
    return entry


def score(
    backend: Backend,
    models: Sequence[str] | None = None,
    *,
    now: dt.datetime | None = None,
    timings: dict[str, float] | None = None,
) -> list[FitRecord]:
    """Rescore the history up to ``now`` with each model's last successful fit (no refit).

    The history is read once and the shared feature snapshot built once for all models;
    each model's scores are handed to one writer thread, so the store writes model N's
    scores while model N+1 scores. ``timings`` (when given) receives seconds per step:
    read, features, each model's scoring, the writes (all, as they overlapped) and the total.
    """
    started = time.perf_counter()
    chosen = check_models(models)
    now = now or dt.datetime.now(dt.UTC)
    fitted: dict[str, tuple[FitRecord, Fitted]] = {}
    for model in chosen:
        entry = registry.current(backend, model)
        if entry is None:
            if models:
                raise PredictionError(f"model `{model}` was never fitted: run `opencdp predict fit {model}` first", field="models")
            continue
        fitted[model] = (entry, registry.load_model(backend, entry))
    if not fitted:
        raise PredictionError("no model has been fitted yet: run `opencdp predict fit` first", field="models")
    steps: dict[str, float] = {} if timings is None else timings
    days = max(int(e.params.get("horizon_days", 30)) for e, _ in fitted.values())
    history = read_history(backend, now, engagement_days=2 * max(days, 90) + 120)
    steps["read_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    snapshot(history, history.now_ms)  # the features propensity and churn share, built once
    steps["features_s"] = time.perf_counter() - mark
    results: list[FitRecord] = []
    pending: list[tuple[FitRecord, Future[dict[str, int]]]] = []
    write_s: list[float] = []

    def write(sets: list[ScoreSet], version: str, metrics: dict[str, Any]) -> dict[str, int]:
        mark = time.perf_counter()
        try:
            return _write(backend, history, sets, version, metrics)
        finally:
            write_s.append(time.perf_counter() - mark)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer") as writer:
        for model, (entry, model_object) in fitted.items():
            mark = time.perf_counter()
            version = _version(model, dt.datetime.now(dt.UTC))
            sets = model_object.score(history)
            seconds = time.perf_counter() - mark
            steps[f"{model}_s"] = seconds
            record = FitRecord(model, version, "scored", dt.datetime.now(dt.UTC), history.now, seconds,
                               entry.params, entry.metrics, {}, f"rescored with fit {entry.model_version}")
            metrics = {"model": model, "fit": entry.model_version, **entry.metrics}
            pending.append((record, writer.submit(write, sets, version, metrics)))
            results.append(record)
        mark = time.perf_counter()
        for record, written in pending:
            record.scores = written.result()
    steps["write_wait_s"] = time.perf_counter() - mark
    steps["write_s"] = sum(write_s)
    steps["total_s"] = time.perf_counter() - started
    return results


class RefitScheduler:
    """Refits all models every ``interval_s`` seconds, in a daemon thread (``start`` / ``stop``).

    A refit is due when the newest fit in the registry is older than the interval, so a
    restarted server does not refit at once after a recent fit.
    """

    def __init__(
        self,
        backend: Backend,
        interval_s: float,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        poll_s: float = 60.0,
    ) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self.clock = clock
        self.poll_s = min(poll_s, interval_s) if interval_s > 0 else poll_s
        self.last_error: str | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        newest = max((r.fitted_at for r in registry.latest(self.backend).values()), default=None)
        return newest is None or (self.clock() - newest).total_seconds() >= self.interval_s

    def tick(self) -> list[FitRecord]:
        """Refit if due; what was fitted (nothing when not due)."""
        if not self.due():
            return []
        self.runs += 1
        return fit(self.backend, now=self.clock())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="predictions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as error:  # keep the server up; the next poll tries again
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("scheduled prediction refit failed")
            self._stop.wait(self.poll_s)
