"""Choosing a strategy without peeking at the test period.

When several strategies (or several settings of one) are tried, the choice is made on the
walk-forward's **validation** slices only; the **test** figures of every candidate are
reported next to the validation figures, marked as not used for selection.

Interface: two stacked daily frames of the same candidates, as
:func:`kizashi.portfolio.simulate.run_strategies` returns them:

* ``validation``: the candidates simulated on each fold's validation-slice predictions.
  Validation slices of different folds may share dates, so simulate them with
  ``by=("fold",)`` (one book per fold); the statistics pool all folds' days.
* ``test``: the same candidates on the test predictions (one continuous book, as the
  run directory's ``predictions.parquet``).

The selected candidate maximizes the validation ``metric`` (a field of
:data:`kizashi.portfolio.stats.STAT_FIELDS`: ``net_sharpe`` by default); a candidate without
a value (e.g. zero volatility) cannot be selected; ties go to the candidate listed first.
The test frame is only summarized, never read by the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import require_columns
from kizashi.portfolio.settings import SelectionMetric
from kizashi.portfolio.stats import STAT_FIELDS, strategy_table

VALIDATION = "validation"
TEST = "test"
NOTES = {
    VALIDATION: "validation slices: used for selection",
    TEST: "test period: not used for selection",
}


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and every candidate's validation and test figures.

    Attributes:
        selected: name of the chosen candidate.
        metric: the validation statistic it maximizes.
        table: two rows per candidate (validation first), columns ``strategy, part
            ('validation' | 'test'), used_for_selection (Boolean), selected (Boolean, on both
            rows of the chosen candidate), note`` and then :data:`STAT_FIELDS`.
    """

    selected: str
    metric: str
    table: pl.DataFrame


def select_by_validation(
    validation: pl.DataFrame,
    test: pl.DataFrame,
    metric: SelectionMetric = "net_sharpe",
    periods_per_year: int = 252,
) -> Selection:
    """Pick the candidate with the best validation ``metric``; report validation and test figures.

    Args:
        validation: stacked daily frames (a ``strategy`` column) on the validation slices.
        test: stacked daily frames of the same candidates on the test period.
        metric: the statistic maximized on validation.
        periods_per_year: annualization factor.

    Returns:
        :class:`Selection`.
    """
    if metric not in STAT_FIELDS:
        raise KizashiError(
            f"select_by_validation: unknown metric {metric!r}; one of {', '.join(STAT_FIELDS)}"
        )
    require_columns(validation, ["strategy"], "select_by_validation (validation)")
    require_columns(test, ["strategy"], "select_by_validation (test)")
    val_table = strategy_table(validation, periods_per_year)
    test_table = strategy_table(test, periods_per_year)
    candidates = val_table.get_column("strategy").to_list()
    tested = test_table.get_column("strategy").to_list()
    if set(candidates) != set(tested):
        raise KizashiError(
            "select_by_validation: validation and test name different candidates: "
            f"only in validation {sorted(set(candidates) - set(tested))}, only in test {sorted(set(tested) - set(candidates))}"
        )
    scores = val_table.get_column(metric).to_list()
    best: str | None = None
    best_score = float("-inf")
    for name, score in zip(candidates, scores, strict=True):
        if score is not None and score > best_score:
            best, best_score = name, score
    if best is None:
        raise KizashiError(
            f"select_by_validation: no candidate has a validation {metric}; candidates {candidates}"
        )

    def tagged(table: pl.DataFrame, part: str) -> pl.DataFrame:
        return table.select(
            "strategy",
            pl.lit(part).alias("part"),
            pl.lit(part == VALIDATION).alias("used_for_selection"),
            (pl.col("strategy") == best).alias("selected"),
            pl.lit(NOTES[part]).alias("note"),
            *STAT_FIELDS,
        )

    order = pl.DataFrame({"strategy": candidates}).with_row_index("_order")
    table = (
        pl.concat([tagged(val_table, VALIDATION), tagged(test_table, TEST)])
        .join(order, on="strategy")
        .sort("_order", pl.col("part") != VALIDATION)
        .drop("_order")
    )
    return Selection(selected=best, metric=metric, table=table)


__all__ = ["NOTES", "TEST", "VALIDATION", "Selection", "select_by_validation"]
