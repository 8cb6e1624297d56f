"""What every prediction model hands to the runner: fitted state that scores a history, and its figures.

A model is fitted on a ``History`` (``fit`` functions in each module) and returns a
``Fitted`` object: picklable, so the registry keeps it and ``opencdp predict score`` can
rescore fresh data without refitting; its ``score`` gives one ``ScoreSet`` per stored score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.predictions.history import History


@dataclass(frozen=True)
class ScoreSet:
    """Values of one score: ``values[i]`` belongs to customer ``customer[i]`` (index into ``Orders.ids``)."""

    name: str
    customer: npt.NDArray[np.int64]
    values: npt.NDArray[Any] | list[str] | pa.Array
    """Numbers as a numpy array; text as Arrow (or a list)."""
    description: str


class Fitted(Protocol):
    """A fitted model."""

    def score(self, history: History) -> list[ScoreSet]: ...


@dataclass
class FitResult:
    """A fit: the model, its parameters (JSON-able) and its quality figures."""

    fitted: Fitted
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
