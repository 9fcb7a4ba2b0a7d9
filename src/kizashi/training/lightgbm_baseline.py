"""The gradient-boosting baseline: one LightGBM regressor per (fold, horizon).

The label is, by default, the per-day percentile rank of the forward return centred on 0
(``target_rank_{h}d - 0.5``): a day's cross-section is what the model has to order, and the
rank removes the market's common move and the fat tails of raw returns. Early stopping
watches the mean daily RankIC on the fold's validation slice (what the model is judged on;
the L2 loss on ranks is a noisy proxy), a slice ``kizashi.splits`` separates from both
training (purge) and test (purge + embargo). Deterministic given the seed: LightGBM's
``deterministic`` mode with fixed bagging / feature-fraction seeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from kizashi.config import LightGBMConfig
from kizashi.errors import KizashiError

log = logging.getLogger(__name__)


def import_lightgbm():
    try:
        import lightgbm
    except OSError as err:  # the wheel links the system OpenMP runtime
        raise KizashiError(
            f"LightGBM could not load its native library ({err}); on Debian/Ubuntu install the "
            "OpenMP runtime: apt-get install libgomp1"
        ) from None
    return lightgbm


def lightgbm_params(config: LightGBMConfig, seed: int) -> dict[str, Any]:
    """LightGBM parameters for ``config`` (extra ``config.params`` override the rest)."""
    params: dict[str, Any] = {
        "objective": "regression",
        "metric": "l2",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": config.bagging_freq,
        "lambda_l2": config.lambda_l2,
        "max_bin": config.max_bin,
        "num_threads": config.num_threads,
        "seed": seed,
        "bagging_seed": seed + 1,
        "feature_fraction_seed": seed + 2,
        "data_random_seed": seed + 3,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    params.update(config.params)
    return params


class DailyRankIC:
    """LightGBM ``feval``: the mean over days of the Spearman correlation between the
    predictions and the labels of each day's rows (higher is better).

    ``day`` [N] holds each validation row's day id. Ranks are ordinal within a day (ties in
    predictions are broken by row order), computed with one lexsort per call.
    """

    def __init__(self, day: np.ndarray, labels: np.ndarray) -> None:
        self.day = np.asarray(day)
        self.label_ranks = self._ranks(np.asarray(labels, dtype=np.float64))

    def _ranks(self, values: np.ndarray) -> np.ndarray:
        order = np.lexsort((values, self.day))
        ranks = np.empty(len(values), dtype=np.float64)
        day_sorted = self.day[order]
        starts = np.r_[0, np.flatnonzero(np.diff(day_sorted)) + 1]
        position = np.arange(len(values)) - np.repeat(starts, np.diff(np.r_[starts, len(values)]))
        ranks[order] = position
        return ranks

    def value(self, predictions: np.ndarray) -> float:
        pred_ranks = self._ranks(np.asarray(predictions, dtype=np.float64))
        uniques, inverse, counts = np.unique(self.day, return_inverse=True, return_counts=True)
        def per_day(v: np.ndarray) -> np.ndarray:
            return np.bincount(inverse, weights=v, minlength=len(uniques))
        mean_p, mean_l = per_day(pred_ranks) / counts, per_day(self.label_ranks) / counts
        dp, dl = pred_ranks - mean_p[inverse], self.label_ranks - mean_l[inverse]
        cov, var_p, var_l = per_day(dp * dl), per_day(dp * dp), per_day(dl * dl)
        ok = (counts > 1) & (var_p > 0) & (var_l > 0)
        return float(np.mean(cov[ok] / np.sqrt(var_p[ok] * var_l[ok]))) if ok.any() else 0.0

    def __call__(self, predictions: np.ndarray, dataset: Any) -> tuple[str, float, bool]:
        return "daily_rank_ic", self.value(predictions), True


@dataclass
class FittedBooster:
    """A trained booster with what the run directory records about it."""

    booster: Any
    best_iteration: int
    importance_gain: np.ndarray  # [F]
    importance_split: np.ndarray  # [F]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``features`` [N, F] float32 (NaN = missing) -> predictions [N] float64."""
        return np.asarray(self.booster.predict(features, num_iteration=self.best_iteration), dtype=np.float64)


def fit_booster(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray | None,
    valid_y: np.ndarray | None,
    feature_names: list[str],
    config: LightGBMConfig,
    seed: int,
    valid_day: np.ndarray | None = None,
) -> FittedBooster:
    """Fit on ``train_x`` [N, F] / ``train_y`` [N]; early-stop on the validation slice
    ``valid_x`` [M, F] / ``valid_y`` [M] when one is given (otherwise train ``n_estimators``
    rounds): on the mean daily RankIC when ``valid_day`` [M] gives the rows' days, else L2."""
    lgb = import_lightgbm()
    params = lightgbm_params(config, seed)
    train_set = lgb.Dataset(train_x, label=train_y, feature_name=feature_names, free_raw_data=True)
    callbacks = [lgb.log_evaluation(period=0)]
    valid_sets = []
    feval = None
    if valid_x is not None and valid_y is not None and len(valid_y):
        valid_sets = [lgb.Dataset(valid_x, label=valid_y, reference=train_set)]
        if valid_day is not None:
            feval = DailyRankIC(valid_day, valid_y)
            params["metric"] = "None"
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.n_estimators,
        valid_sets=valid_sets,
        feval=feval,
        callbacks=callbacks,
    )
    best = booster.best_iteration if valid_sets and booster.best_iteration > 0 else booster.current_iteration()
    return FittedBooster(
        booster=booster,
        best_iteration=int(best),
        importance_gain=booster.feature_importance("gain", iteration=best).astype(np.float64),
        importance_split=booster.feature_importance("split", iteration=best).astype(np.float64),
    )
