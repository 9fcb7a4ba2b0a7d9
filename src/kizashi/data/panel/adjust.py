"""Causal (forward) price adjustment for splits and dividends.

Back-adjusted prices as vendors publish them (``adjusted_close``, J-Quants ``AdjustmentClose``)
rescale the whole history every time a split happens, so the value at date t depends on
events after t: a look-ahead leak in any feature built on it. kizashi adjusts forward
instead, in the units of each stock's first row: the price multiplier ``C_t`` of a stock
depends only on the corporate actions on dates ``<= t`` (cumulative products, never
reversed ones), so appending or changing data after t never moves a value at t.

Conventions (per code, over its rows in date order; an event on a stock's first row is
relative to a close that is not in the data and is ignored, so ``C_{t0} = 1``):

- ``adjustment_factor`` (J-Quants, 0.5 on the ex-date of a 2-for-1 split):
  ``C_t = 1 / prod_{d<=t} f_d``; volume is divided by ``C_t``.
- ``split_coefficient`` (AlphaVantage, 2.0 on the ex-date of a 2-for-1 split):
  ``C_t = prod_{d<=t} s_d * g_d`` where, when ``dividend_amount`` is present,
  ``g_d = p / (p - div_d)`` with ``p = close_{d-1} / s_d`` (the previous raw close in
  post-split units): a total-return series. Volume is divided by the split part only.
- only ``adjusted_close``: ``C_t = (adjusted_close_t / close_t) / (adjusted_close_t0 /
  close_t0)``, which depends only on the events in ``(t0, t]``. The vendor's ratio mixes
  splits and dividends, so volume is divided by the whole ``C_t`` (a dividend moves it by
  its yield, well under a percent).
- none of these: prices unchanged, ``C_t = 1``.

When a factor column and ``adjusted_close`` are both present, the factors are used and the
days on which the adjusted daily return differs from the ``adjusted_close`` daily return by
more than 0.5% are counted in an info issue (``adjusted_close_mismatch``).
"""

from __future__ import annotations

import logging

import polars as pl

from kizashi.data.schema import CODE, DATE, LIMIT_FLAG_COLUMNS, ORACLE_PREFIX, PRICE_COLUMNS
from kizashi.data.report import ValidationIssue, format_examples

log = logging.getLogger(__name__)

MULTIPLIER = "adjustment_multiplier"
MISMATCH_TOLERANCE = 0.005
ADJUSTMENT_INPUT_COLUMNS = (
    "adjustment_factor",
    "adjusted_close",
    "split_coefficient",
    "dividend_amount",
)
OUTPUT_COLUMNS = (CODE, DATE, *PRICE_COLUMNS, "volume", "turnover_value", *LIMIT_FLAG_COLUMNS)


def _issue(
    rule: str,
    column: str | None,
    count: int,
    action: str,
    message: str,
    examples: pl.DataFrame | None = None,
) -> ValidationIssue:
    log.info("adjust: %s %s (%s): %d — %s", action, rule, column, count, message)
    text = format_examples(examples) if examples is not None else ""
    return ValidationIssue(rule, column, int(count), action, message, text)  # type: ignore[arg-type]


def _is_sorted(df: pl.DataFrame) -> bool:
    prev_code, prev_date = pl.col(CODE).shift(1), pl.col(DATE).shift(1)
    bad = (pl.col(CODE) < prev_code) | ((pl.col(CODE) == prev_code) & (pl.col(DATE) <= prev_date))
    return not bool(df.select(bad.fill_null(False).any()).item())


def adjust_prices(df: pl.DataFrame) -> tuple[pl.DataFrame, list[ValidationIssue]]:
    """Forward-adjust a validated panel (sorted by code, date; see the module docstring).

    Returns ``(frame, issues)``; the frame has code, date, open, high, low, close, volume
    (adjusted), turnover_value (raw currency traded: kept, or raw close x raw volume), the
    limit flags ``upper_limit`` / ``lower_limit`` when given (unchanged), the ``oracle_*``
    columns and ``adjustment_multiplier`` (the ``C_t`` applied to prices).
    """
    issues: list[ValidationIssue] = []
    columns = df.columns
    if not _is_sorted(df):
        df = df.sort(CODE, DATE)
        issues.append(
            _issue(
                "unsorted",
                f"{CODE}, {DATE}",
                df.height,
                "info",
                "panel sorted by (code, date) before adjusting",
            )
        )

    first_row = pl.int_range(pl.len()).over(CODE) == 0
    close = pl.col("close")
    has_adjusted_close = "adjusted_close" in columns
    method = "none"
    if "adjustment_factor" in columns:
        method = "adjustment_factor"
        factor = pl.when(first_row).then(1.0).otherwise(pl.col("adjustment_factor"))
        df = df.with_columns((1.0 / factor.cum_prod().over(CODE)).alias(MULTIPLIER))
        df = df.with_columns(pl.col(MULTIPLIER).alias("__volume_divisor"))
        if "split_coefficient" in columns:
            issues.append(
                _issue(
                    "adjustment_convention",
                    "split_coefficient",
                    0,
                    "info",
                    "both adjustment_factor and split_coefficient present; "
                    "used adjustment_factor only",
                )
            )
    elif "split_coefficient" in columns:
        method = "split_coefficient"
        split = pl.when(first_row).then(1.0).otherwise(pl.col("split_coefficient"))
        step = split
        if "dividend_amount" in columns:
            method = "split_coefficient + dividend_amount"
            dividend = pl.col("dividend_amount")
            previous = close.shift(1).over(CODE) / pl.col("split_coefficient")
            valid = previous - dividend > 0
            has_dividend = ~first_row & (dividend > 0)
            growth = (
                pl.when(has_dividend & valid).then(previous / (previous - dividend)).otherwise(1.0)
            )
            df = df.with_columns(
                previous.alias("__previous_close"), (has_dividend & ~valid).alias("__bad_dividend")
            )
            bad = df.filter(pl.col("__bad_dividend"))
            if bad.height:
                issues.append(
                    _issue(
                        "dividend_not_applied",
                        "dividend_amount",
                        bad.height,
                        "info",
                        f"{bad.height} dividend(s) not smaller than the previous close "
                        "(in post-split units); "
                        "not applied (the adjusted series jumps there)",
                        bad.select(
                            CODE, DATE, "__previous_close", "dividend_amount", "close"
                        ).rename({"__previous_close": "previous_close"}),
                    )
                )
            step = split * growth
            df = df.drop("__previous_close", "__bad_dividend")
        df = df.with_columns(
            step.cum_prod().over(CODE).alias(MULTIPLIER),
            split.cum_prod().over(CODE).alias("__volume_divisor"),
        )
    elif has_adjusted_close:
        method = "adjusted_close"
        ratio = pl.col("adjusted_close") / close
        df = df.with_columns((ratio / ratio.first().over(CODE)).alias(MULTIPLIER))
        df = df.with_columns(pl.col(MULTIPLIER).alias("__volume_divisor"))
    else:
        df = df.with_columns(pl.lit(1.0).alias(MULTIPLIER), pl.lit(1.0).alias("__volume_divisor"))

    changes = pl.col(MULTIPLIER) != pl.col(MULTIPLIER).shift(1).over(CODE)
    n_events = int(df.select(changes.fill_null(False).sum()).item())
    ignored_first = 0
    for name, neutral in (
        ("adjustment_factor", 1.0),
        ("split_coefficient", 1.0),
        ("dividend_amount", 0.0),
    ):
        if name in columns and method != "adjusted_close":
            ignored_first += int(df.select((first_row & (pl.col(name) != neutral)).sum()).item())
    issues.append(
        _issue(
            "adjustment_method",
            None,
            n_events,
            "info",
            f"forward adjustment from {method}: {n_events} day(s) where the multiplier changes"
            + (
                f"; {ignored_first} event(s) on a stock's first row ignored"
                if ignored_first
                else ""
            ),
        )
    )

    if has_adjusted_close and method not in ("adjusted_close", "none"):
        issues.append(_adjusted_close_check(df))

    if "turnover_value" in columns:
        n_null = df.get_column("turnover_value").null_count()
        turnover = pl.col("turnover_value").fill_null(close * pl.col("volume"))
        if n_null:
            issues.append(
                _issue(
                    "turnover_filled",
                    "turnover_value",
                    n_null,
                    "repaired",
                    f"{n_null} null turnover_value(s) filled with raw close x raw volume",
                )
            )
    else:
        turnover = close * pl.col("volume")

    oracle = [c for c in columns if c.startswith(ORACLE_PREFIX)]
    dropped = [
        c
        for c in columns
        if c not in OUTPUT_COLUMNS and c not in ADJUSTMENT_INPUT_COLUMNS and c not in oracle
    ]
    if dropped:
        issues.append(
            _issue(
                "columns_not_carried",
                ", ".join(dropped),
                len(dropped),
                "info",
                f"columns outside the adjusted panel's schema left out: {dropped}",
            )
        )
    out = df.select(
        CODE,
        DATE,
        *[(pl.col(c) * pl.col(MULTIPLIER)).alias(c) for c in PRICE_COLUMNS],
        (pl.col("volume") / pl.col("__volume_divisor")).alias("volume"),
        turnover.cast(pl.Float64).alias("turnover_value"),
        *[pl.col(c) for c in LIMIT_FLAG_COLUMNS if c in columns],  # flags of the day: not adjusted
        *oracle,
        pl.col(MULTIPLIER).cast(pl.Float64),
    )
    return out, issues


def _adjusted_close_check(df: pl.DataFrame) -> ValidationIssue:
    """Days where our adjusted return and the vendor's adjusted_close return disagree."""
    ours = (pl.col("close") * pl.col(MULTIPLIER)).pct_change().over(CODE)
    theirs = pl.col("adjusted_close").pct_change().over(CODE)
    extra = [
        c for c in ("split_coefficient", "dividend_amount", "adjustment_factor") if c in df.columns
    ]
    checked = df.select(
        CODE,
        DATE,
        "close",
        "adjusted_close",
        *extra,
        ours.alias("return_adjusted"),
        theirs.alias("return_adjusted_close"),
    ).with_columns(
        (pl.col("return_adjusted") - pl.col("return_adjusted_close")).alias("difference")
    )
    compared = checked.filter(pl.col("difference").is_not_null())
    bad = compared.filter(pl.col("difference").abs() > MISMATCH_TOLERANCE)
    n_codes = bad.get_column(CODE).n_unique()
    share = bad.height / compared.height if compared.height else 0.0
    return _issue(
        "adjusted_close_mismatch",
        "adjusted_close",
        bad.height,
        "info",
        f"{bad.height} of {compared.height} daily returns ({share:.4%}, in {n_codes} stock(s)) "
        "differ from "
        f"the adjusted_close return by more than {MISMATCH_TOLERANCE:.1%} (largest first)",
        bad.sort(pl.col("difference").abs(), descending=True),
    )
