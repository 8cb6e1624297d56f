"""Predictions (issue 5): models over each customer's purchase history, stored as scores.

The data flow, one module per step::

    history.py      orders, order lines, engagement from the store (canonical profiles), summaries
    btyd.py         BG/NBD + Gamma-Gamma maximum likelihood and predictions (numpy/scipy only)
    clv.py          expected purchases, P(alive), expected order value, CLV; holdout check
    features.py     per-customer features at a cutoff (no future leaks into the past)
    classifiers.py  calibrated gradient boosting for purchase propensity and churn; backtests
    nextorder.py    next order date from each customer's rhythm
    replenishment.py  due dates of consumables (catalogue or learned lifetimes)
    vip.py          potential VIPs among newcomers
    model.py        the contract: FitResult, Fitted.score(history) -> ScoreSet
    registry.py     prediction_fits: every fit's parameters, figures and pickled model
    run.py          fit / score / RefitScheduler: writes scores with profiles.scores.write_scores

Scores are read in segments by name (``computed.churn_probability > 0.7``) and listed on profiles.
"""
