"""Fits started over the API run in the background: ``FitJobs.submit`` returns a fit id at once.

A fit of all models takes minutes at a million customers, longer than an HTTP client should
wait. ``submit`` checks the request (models, options) and queues it; one worker thread runs
the queued fits in order (two fits of one store at once would only slow each other down).
``get`` tells how one goes: ``queued``, ``running`` (with the models fitted so far, from
``run.fit``'s progress), then ``done`` (at least one model fitted) or ``failed`` (no model
could be fitted, each model's reason in its registry entry, or the run itself crashed).

Each model's outcome is recorded in the registry (``prediction_fits``) as it finishes, as for
any fit; the jobs themselves are kept in memory (the last ``keep``), so after a restart a
fit id is unknown and its fits are read from ``GET /predictions/{model}/fits``.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opencdp.predictions import run
from opencdp.predictions.registry import FitRecord
from opencdp.storage.base import Backend

log = logging.getLogger("opencdp.predictions")


@dataclass
class FitJob:
    """One requested fit and how far it got."""

    id: str
    models: list[str]
    now: dt.datetime | None
    options: run.Options
    status: str = "queued"
    submitted_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    fits: list[FitRecord] = field(default_factory=list)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        times = {"submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at}
        return {
            "fit_id": self.id,
            "status": self.status,
            "models": self.models,
            "now": self.now.isoformat() if self.now else None,
            **{name: value.isoformat() if value else None for name, value in times.items()},
            "fits": [f.to_dict() for f in self.fits],
            "message": self.message,
        }


class FitJobs:
    """The background fits of one store: a queue and the thread that works it (started on first use)."""

    def __init__(self, backend: Backend, *, keep: int = 100) -> None:
        self.backend = backend
        self.keep = keep
        self._jobs: OrderedDict[str, FitJob] = OrderedDict()
        self._queue: queue.Queue[FitJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, models: Sequence[str] | None, now: dt.datetime | None, options: run.Options) -> FitJob:
        """Queue a fit of ``models`` (default: the settings' models); bad models raise at once."""
        settings = self.backend.settings
        default = getattr(settings, "predictions_models", None) or run.MODELS
        job = FitJob(f"fit-{uuid.uuid4().hex[:12]}", run.check_models(models, default), now, options)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="prediction-fits", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def get(self, fit_id: str) -> FitJob | None:
        with self._lock:
            return self._jobs.get(fit_id)

    def list(self) -> list[FitJob]:
        """The kept jobs, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after the fit it is running (queued fits are dropped: marked failed)."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        for job in self.list():
            if job.status == "queued":
                job.status, job.message = "failed", "the server stopped before this fit started"

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.status != "queued":
                continue
            self.run(job)

    def run(self, job: FitJob) -> None:
        """Run one job to its end (the worker's step; a crash fails the job and keeps the worker)."""
        job.status, job.started_at = "running", dt.datetime.now(dt.UTC)
        try:
            run.fit(self.backend, job.models, now=job.now, options=job.options, progress=job.fits.append)
        except Exception as error:  # a crashed run fails its job; the next queued fit still runs
            log.exception("background prediction fit %s failed", job.id)
            job.status, job.message = "failed", f"{type(error).__name__}: {error}"
        else:
            failed = [f for f in job.fits if f.status == "failed"]
            if job.fits and len(failed) == len(job.fits):
                job.status = "failed"
                job.message = "no model could be fitted: " + "; ".join(f"{f.model}: {f.message}" for f in failed)
            else:
                job.status = "done"
                if failed:
                    job.message = f"{len(failed)} of {len(job.fits)} models not fitted: " + ", ".join(f.model for f in failed)
        finally:
            job.finished_at = dt.datetime.now(dt.UTC)
