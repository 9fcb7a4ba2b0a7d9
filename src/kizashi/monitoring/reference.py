"""The monitor's reference: what "normal" looked like in the training period.

:func:`build_reference` summarizes a reference period (normally the model's out-of-sample
walk-forward predictions over the training span, whose distribution is the one a deployed
model should keep; in-sample scores of a fitted model can be narrower or wider) into a
:class:`MonitorReference`:

* ``scores``: the distribution of the raw scores pooled over all reference days
  (:class:`~kizashi.monitoring.drift.DistributionReference` with quantile bin edges and shares
  for PSI, and the sorted values or their quantile sketch for KS);
* ``features``: the same for each watched feature (PSI only, so no KS values are kept), in
  the order given (most important first), at most ``settings.n_top_features``;
* ``universe_size``: the median number of stocks with a finite score per reference day;
* ``rank_ic_mean`` / ``rank_ic_sd`` / ``rank_ic_n``: the summary
  (:func:`kizashi.evaluation.metrics.summarize_ic`) of the reference daily RankIC, e.g. the
  walk-forward test days' ``rank_ic`` column, when given.

The reference is a pydantic model: :meth:`MonitorReference.to_json` /
:meth:`MonitorReference.from_json` round-trip it exactly (floats are written with ``repr``
precision), so it can live inside a model artefact; :meth:`MonitorReference.save` writes it
atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from kizashi.atomic import write_text_atomic
from kizashi.config import StrictModel
from kizashi.data.schema import DATE
from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import finite_values
from kizashi.evaluation.metrics import summarize_ic
from kizashi.monitoring.drift import (
    DistributionReference,
    bin_shares,
    quantile_edges,
    quantile_sketch,
)
from kizashi.monitoring.frames import check_frame, non_finite_count
from kizashi.monitoring.settings import MonitorSettings

logger = logging.getLogger(__name__)

REFERENCE_FORMAT = "kizashi.monitor_reference"
REFERENCE_VERSION = 1


class MonitorReference(StrictModel):
    """The reference distributions and figures the monitor compares a stream with."""

    format: Literal["kizashi.monitor_reference"] = REFERENCE_FORMAT
    version: int = REFERENCE_VERSION
    score_column: str
    first_date: str
    last_date: str
    n_days: int = Field(ge=1)
    universe_size: float = Field(gt=0.0)
    n_bins: int = Field(ge=2)
    scores: DistributionReference
    features: dict[str, DistributionReference] = Field(default_factory=dict)
    rank_ic_mean: float | None = None
    rank_ic_sd: float | None = None
    rank_ic_n: int = 0

    def to_json(self) -> str:
        """The reference as a JSON document (exact round trip through :meth:`from_json`)."""
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> MonitorReference:
        """A reference from :meth:`to_json`'s text; a clear error on anything else."""
        try:
            return cls.model_validate_json(text)
        except ValueError as err:  # pydantic.ValidationError is a ValueError
            raise KizashiError(f"not a kizashi monitor reference: {err}") from err

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MonitorReference:
        file = Path(path)
        if not file.is_file():
            raise KizashiError(f"{file}: monitor reference not found")
        try:
            return cls.from_json(file.read_bytes())
        except KizashiError as err:
            raise KizashiError(f"{file}: {err}") from err


def distribution_reference(values: np.ndarray, n_bins: int, max_values: int) -> DistributionReference:
    """The :class:`DistributionReference` of the finite ``values``: quantile edges and shares
    for PSI, and (``max_values > 0``) the sorted values or their sketch for KS."""
    v = finite_values(values)
    edges = quantile_edges(v, n_bins)
    sketch = quantile_sketch(v, max_values) if max_values > 0 else np.empty(0)
    return DistributionReference(
        n=int(v.size), edges=edges.tolist(), shares=bin_shares(v, edges).tolist(),
        values=sketch.tolist(), mean=float(v.mean()), std=float(v.std()),
    )


def build_reference(
    signals: pl.DataFrame,
    *,
    features: pl.DataFrame | None = None,
    feature_names: Sequence[str] = (),
    reference_rank_ic: np.ndarray | pl.Series | Sequence[float] | None = None,
    settings: MonitorSettings | None = None,
    score_column: str = "score",
) -> MonitorReference:
    """Summarize a reference period into a :class:`MonitorReference`.

    Args:
        signals: ``[rows]`` frame ``date, code, <score_column>`` of the reference period.
        features: ``[rows]`` frame ``date, code, <feature columns>`` of the reference period
            (needed when ``feature_names`` is not empty).
        feature_names: the features to watch, most important first; the first
            ``settings.n_top_features`` are kept.
        reference_rank_ic: ``[days]`` daily RankIC of the reference period (walk-forward test
            days); nulls / NaN ignored.
        settings: bins and sketch size (defaults: :class:`MonitorSettings`).
        score_column: the score column of ``signals``.

    Raises:
        KizashiError: missing columns, duplicated ``(date, code)`` rows, no finite score, a
            watched feature without a finite value.
    """
    settings = settings or MonitorSettings()
    frame = check_frame(signals, [score_column], "reference signals")
    dropped = non_finite_count(frame, score_column)
    if dropped:
        logger.info("reference signals: %d of %d rows have a null or non-finite score; not used",
                    dropped, frame.height)
    scored = frame.filter(pl.col(score_column).is_finite())
    if scored.height == 0:
        raise KizashiError(f"reference signals: no finite {score_column!r} value")
    per_day = scored.group_by(DATE).len()
    scores = distribution_reference(scored[score_column].to_numpy(), settings.n_bins,
                                    settings.max_reference_values)

    watched = list(dict.fromkeys(feature_names))[: settings.n_top_features]
    feature_refs: dict[str, DistributionReference] = {}
    if watched:
        if features is None:
            raise KizashiError(f"build_reference: feature_names {watched[:3]}... given without a features frame")
        table = check_frame(features, watched, "reference features")
        for name in watched:
            values = finite_values(table[name])
            if values.size == 0:
                raise KizashiError(f"reference features: {name!r} has no finite value in the reference period")
            if values.size < table.height:
                logger.info("reference features: %s has %d null or non-finite value(s) of %d; not used",
                            name, table.height - values.size, table.height)
            feature_refs[name] = distribution_reference(values, settings.n_bins, 0)

    summary = summarize_ic(reference_rank_ic) if reference_rank_ic is not None else {"n": 0}
    dates = scored[DATE]
    reference = MonitorReference(
        score_column=score_column,
        first_date=str(dates.min()), last_date=str(dates.max()),
        n_days=per_day.height, universe_size=float(np.median(per_day["len"].to_numpy())),
        n_bins=settings.n_bins, scores=scores, features=feature_refs,
        rank_ic_mean=summary.get("mean"), rank_ic_sd=summary.get("std"), rank_ic_n=int(summary["n"]),
    )
    logger.info("monitor reference: %d days %s .. %s, %.0f stocks a day, %d watched feature(s), "
                "reference RankIC %s", reference.n_days, reference.first_date, reference.last_date,
                reference.universe_size, len(feature_refs),
                "n/a" if reference.rank_ic_mean is None else f"{reference.rank_ic_mean:+.4f}")
    return reference
