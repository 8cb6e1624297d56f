"""Purchase propensity and churn: calibrated gradient boosting, backtested out of time.

For a horizon of ``N`` days and data up to ``T``:

1. **Backtest.** Train on the snapshot at ``T - 2N`` (features up to it, label: an order in
   ``(T - 2N, T - N]``), test on the snapshot at ``T - N`` (label in ``(T - N, T]``): the
   test customers' futures are later than anything the model saw, as they will be in use.
   Reported: AUC, precision and lift in the top decile, Brier score and calibration error,
   each beside an RFM-only logistic regression (recency, frequency, monetary) trained and
   tested the same way — the baseline a marketer already has.
2. **Final model.** Refit on the snapshot at ``T - N`` (all labels known up to ``T``) and
   score every customer at ``T``.

Gradient boosting is ``HistGradientBoostingClassifier`` (fast on two cores; NaN-aware).
Probabilities are calibrated by isotonic regression on a random fifth of the training
snapshot held out from the boosting fit, so "0.7" means about 70% of such customers do.
Churn is the complement event (no order in the next ``N`` days), fitted as its own target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from opencdp.predictions.btyd import NotEnoughHistory
from opencdp.predictions.features import Features, bought_between, snapshot
from opencdp.predictions.history import DAY_MS, History, from_ms
from opencdp.predictions.model import FitResult, ScoreSet

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MIN_CLASS = 20
"""Fewest customers of each label (bought / did not) a training snapshot must have."""
MAX_TRAIN_ROWS = 200_000
"""Larger training snapshots are sampled down to this many customers (stratified): the fit's
cost stays bounded at a million customers, and the AUC it loses is in the third decimal."""


@dataclass
class CalibratedBoosting:
    """A gradient boosting classifier with an isotonic map from its scores to probabilities."""

    boosting: HistGradientBoostingClassifier
    isotonic: IsotonicRegression
    feature_names: tuple[str, ...] = ()

    def predict(self, matrix: FloatArray) -> FloatArray:
        raw = self.boosting.predict_proba(matrix)[:, 1]
        return np.asarray(np.clip(self.isotonic.predict(raw), 0.0, 1.0), dtype=np.float64)


def check_labels(label: BoolArray, what: str, min_customers: int) -> None:
    """Refuse a training snapshot too small or too one-sided to learn from."""
    positives = int(label.sum())
    negatives = len(label) - positives
    if len(label) < min_customers:
        raise NotEnoughHistory(
            f"{what}: {len(label)} customers in the training snapshot, at least {min_customers} needed — "
            "wait for more history or lower predictions_min_customers",
            field="history",
        )
    if min(positives, negatives) < MIN_CLASS:
        raise NotEnoughHistory(
            f"{what}: the training snapshot has {positives} positive and {negatives} negative customers; each class "
            f"needs at least {MIN_CLASS} — the history is too short or too uniform for this horizon (try a shorter one)",
            field="history",
        )


def fit_calibrated(
    matrix: FloatArray, label: BoolArray, *, seed: int = 0, feature_names: tuple[str, ...] = ()
) -> CalibratedBoosting:
    """Boosting fitted on four fifths of the rows, isotonic calibration on the other fifth (stratified)."""
    rng = np.random.default_rng(seed)
    if len(label) > MAX_TRAIN_ROWS:
        sample = np.sort(rng.choice(len(label), size=MAX_TRAIN_ROWS, replace=False))
        matrix, label = matrix[sample], label[sample]
    holdout = np.zeros(len(label), dtype=bool)
    for cls in (False, True):
        rows = np.flatnonzero(label == cls)
        holdout[rng.choice(rows, size=max(1, len(rows) // 5), replace=False)] = True
    boosting = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.08, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        early_stopping=len(label) > 2_000, random_state=seed,
    )
    boosting.fit(matrix[~holdout], label[~holdout])
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    isotonic.fit(boosting.predict_proba(matrix[holdout])[:, 1], label[holdout].astype(np.float64))
    return CalibratedBoosting(boosting, isotonic, feature_names)


def fit_baseline(rfm: FloatArray, label: BoolArray) -> LogisticRegression:
    model = LogisticRegression(max_iter=500)
    model.fit(rfm, label)
    return model


def top_decile_precision(score: FloatArray, label: BoolArray) -> float:
    """Share of positives among the tenth of customers with the highest scores."""
    k = max(1, len(score) // 10)
    top = np.argsort(-score, kind="stable")[:k]
    return float(label[top].mean())


def calibration_error(probability: FloatArray, label: BoolArray, bins: int = 10) -> float:
    """Expected calibration error: |mean predicted - observed rate| averaged over deciles of the prediction."""
    order = np.argsort(probability, kind="stable")
    groups = np.array_split(order, bins)
    total = sum(len(g) * abs(float(probability[g].mean()) - float(label[g].mean())) for g in groups if len(g))
    return total / max(1, len(probability))


@dataclass
class Evaluation:
    """Backtest figures of a model and of the RFM baseline on the same test snapshot."""

    figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, probability: FloatArray, baseline: FloatArray, label: BoolArray) -> Evaluation:
        if label.all() or not label.any():
            raise NotEnoughHistory(
                "the backtest's test snapshot has a single class: its figures would mean nothing — extend the history",
                field="history",
            )
        base_rate = float(label.mean())
        figures: dict[str, float] = {"test_customers": float(len(label)), "test_base_rate": base_rate}
        for prefix, score in (("", probability), ("baseline_", baseline)):
            precision = top_decile_precision(score, label)
            figures[f"{prefix}auc"] = float(roc_auc_score(label, score))
            figures[f"{prefix}precision_top_decile"] = precision
            figures[f"{prefix}lift_top_decile"] = precision / base_rate
            figures[f"{prefix}brier"] = float(brier_score_loss(label, np.clip(score, 0, 1)))
            figures[f"{prefix}calibration_error"] = calibration_error(score, label)
        return cls(figures)

    def summary(self) -> dict[str, Any]:
        return {k: round(v, 4) for k, v in self.figures.items()}


# -- propensity and churn ----------------------------------------------------------------------------


@dataclass
class Propensity:
    """A fitted propensity (``target='purchase'``) or churn (``target='churn'``) model for ``horizon_days``."""

    target: str
    horizon_days: int
    model: CalibratedBoosting

    @property
    def score_name(self) -> str:
        return f"purchase_probability_{self.horizon_days}d" if self.target == "purchase" else "churn_probability"

    def score(self, history: History) -> list[ScoreSet]:
        features = snapshot(history, history.now_ms)
        if len(features.customer) == 0:
            return []
        what = "buys" if self.target == "purchase" else "does not buy"
        return [
            ScoreSet(
                self.score_name,
                features.customer,
                self.model.predict(features.matrix),
                f"probability the customer {what} in the next {self.horizon_days} days (calibrated gradient boosting)",
            )
        ]


def _label(history: History, features: Features, cutoff_ms: int, horizon_days: int, target: str) -> BoolArray:
    bought = bought_between(history.orders, features.customer, cutoff_ms, cutoff_ms + horizon_days * DAY_MS)
    return bought if target == "purchase" else ~bought


def fit_propensity(
    history: History, *, target: str, horizon_days: int, min_customers: int = 200, seed: int = 0
) -> FitResult:
    """Backtest then fit a propensity or churn model on ``history`` (see the module docstring)."""
    if target not in ("purchase", "churn"):
        raise ValueError(f"unknown target {target!r}")
    what = f"{target} in {horizon_days} days"
    horizon_ms = horizon_days * DAY_MS
    train_cut, test_cut = history.now_ms - 2 * horizon_ms, history.now_ms - horizon_ms
    train = snapshot(history, train_cut)
    train_label = _label(history, train, train_cut, horizon_days, target)
    check_labels(train_label, f"{what} (backtest training at {from_ms(train_cut):%Y-%m-%d})", min_customers)
    test = snapshot(history, test_cut)
    test_label = _label(history, test, test_cut, horizon_days, target)
    model = fit_calibrated(train.matrix, train_label, seed=seed, feature_names=train.names)
    baseline = fit_baseline(train.rfm(), train_label)
    evaluation = Evaluation.of(model.predict(test.matrix), baseline.predict_proba(test.rfm())[:, 1], test_label)
    # the model in use learns from the latest complete labels: features at T - N, outcomes up to T
    final = fit_calibrated(test.matrix, test_label, seed=seed, feature_names=test.names)
    metrics: dict[str, Any] = {
        **evaluation.summary(),
        "train_customers": len(train_label),
        "train_base_rate": round(float(train_label.mean()), 4),
        "backtest_train_cutoff": f"{from_ms(train_cut):%Y-%m-%d}",
        "backtest_test_cutoff": f"{from_ms(test_cut):%Y-%m-%d}",
        "final_train_customers": len(test_label),
    }
    params = {"target": target, "horizon_days": horizon_days, "features": list(test.names)}
    return FitResult(Propensity(target, horizon_days, final), params, metrics)
