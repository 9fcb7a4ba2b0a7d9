"""Validation of the daily panel, sector tables and margin balances: clear errors, counted
repairs, nothing silently dropped.

Each ``validate_*`` function casts a raw frame (see :mod:`kizashi.data.panel.read`) to the
canonical dtypes of :mod:`kizashi.data.schema`, checks it rule by rule with Polars
expressions over the whole frame, and returns ``(clean frame, report)``. Every rule ends
in one of four actions, recorded as a :class:`~kizashi.data.report.ValidationIssue` (in the input's
:class:`~kizashi.data.report.ValidationReport`) with a count and example rows:

- ``error``: the data cannot be used as it is. All errors are collected, then raised
  together as one :class:`~kizashi.errors.DataValidationError` naming the file, the column
  and example rows (``raise_on_error=False`` returns the report instead).
- ``dropped``: rows removed under a documented policy; ``n_rows_in == n_rows_out +
  sum(dropped counts)`` always holds.
- ``repaired``: values changed in place (e.g. a null split coefficient read as 1.0).
- ``info``: a fact worth knowing that changes nothing (gaps, sort order, zero-volume bars).

Panel rules, in order (``row`` in the examples is the 1-based data row of the input); each
is one ``_rule_*`` function, and :data:`PANEL_RULES` lists them in the order
:func:`validate_panel` applies them:

1. ``missing_columns`` / ``duplicated_columns`` (error; stops validation).
2. ``unparsable_values`` — strict casts: code to Utf8 (integer codes such as 86970 become
   "86970"), date to Date (ISO, YYYYMMDD, YYYY/MM/DD strings, integers, datetimes), numbers
   to Float64 (NaN is read as null). A value that does not parse is an error (stops).
3. ``code_normalized`` — codes stripped of surrounding whitespace, and upper- or
   lower-cased with ``code_case: upper|lower`` (repaired: rows and codes changed, each
   spelling shown). ``code_collision`` (info): several input spellings became one code
   (``" AAL"`` and ``"AAL"``); their rows are one stock from here on, so a date they share
   is a duplicate (rule 10). ``code_case_variants`` (info, ``code_case: keep``): codes that
   differ only by letter case (``aal``, ``AAL``), kept as separate stocks. The sector
   table and margin balances get the same normalization, so their codes still join.
   ``extra_columns`` (info): columns not in the schema, kept as they are.
4. null code or date (``null_values``, error; a code of only whitespace is null).
5. ``unsorted`` — sorted by (code, date) (info).
6. ``null_adjustment`` — null adjustment_factor / split_coefficient read as 1.0 and null
   dividend_amount as 0.0 (repaired).
7. ``no_trade_rows`` — volume zero or null and no price range (all prices null, or
   open = high = low = close): holiday/halt rows. Dropped with ``drop_zero_volume``
   (default); otherwise kept, and those with null prices then fail ``null_values``.
   ``zero_volume_with_range`` (info) counts zero-volume rows that do show a price range.
8. ``null_values`` — remaining nulls in open/high/low/close/volume (error), and in
   adjusted_close when that column is present.
9. ``non_positive_price``, ``high_below_low``, ``close_outside_range``,
   ``open_outside_range``, ``negative_volume``, ``bad_adjustment`` (non-positive or
   non-finite factors or adjusted_close, negative dividend or turnover): error, or dropped
   with ``on_bad_price: drop`` (each row counted once, under the first rule it breaks).
10. ``duplicate_rows`` — duplicate (code, date) among the rows left after rules 7 and 9,
   so a key keeps a valid row whenever it has one: error, or with ``on_duplicate``
   first/last the first/last of them in input order is kept (dropped). Rows of duplicated
   keys already dropped as invalid are counted under their rule and named in the message
   (an info ``duplicate_rows`` when that left every key with one row).
11. ``price_jump`` — an isolated price jump that reverses: a day whose log return and the
   next day's are both at least ``log(price_jump_factor)`` in size (a factor of 3 by
   default), of opposite signs, and cancel to within half that (the price two days on is
   within a factor ``sqrt(price_jump_factor)`` of the price before), with no split factor
   (``adjustment_factor`` or ``split_coefficient`` other than 1) on either day — a bar in
   the wrong units, such as every price x1000. Returns are those the adjustment will
   produce: the close corrected by the day's ``adjustment_factor`` (or else
   ``split_coefficient``), or with only ``adjusted_close``, the adjusted close. The jump
   day is reported with ``on_price_jump: error`` (default), dropped with ``drop``
   (counted; the stock's return then runs from the day before to the day after), or kept
   and reported (info) with ``keep``. A level shift that stays, or a jump on a stock's
   last row, is not this rule's business.
12. ``short_history`` — rows before a stock's ``min_history``-th row (info: the features
    pipeline keeps them out of the point-in-time universe; nothing is dropped here).
13. ``gaps`` — trading days of the panel's calendar missing inside a stock's life (info).
14. ``empty_panel`` — no rows in the input, or none left after the drops (error).

When rows carrying a corporate-action factor are dropped (rules 7, 9 and 11), the factor
is moved onto the stock's next kept row (factors multiplied, dividends added) so that the
price adjustment downstream stays right (``moved_adjustment_events``, repaired); a dropped
row whose (code, date) keeps another row moves nothing (that row stands for the day).
``oracle_*`` columns and columns unknown to the schema pass through untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl

from kizashi.config import InputConfig
from kizashi.data.schema import (
    CODE,
    DATE,
    MARGIN_DTYPES,
    MARGIN_VALUE_COLUMNS,
    ORACLE_PREFIX,
    PANEL_DTYPES,
    PRICE_COLUMNS,
    PUBLISHED_DATE,
    REQUIRED_MARGIN_COLUMNS,
    REQUIRED_PANEL_COLUMNS,
    SECTOR,
)
from kizashi.data.report import ROW_TMP, Action, ValidationIssue, ValidationReport, format_examples

log = logging.getLogger(__name__)

UNKNOWN_SECTOR = "UNKNOWN"
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y.%m.%d")
# Corporate-action columns: how dropped rows' values are carried to the next kept row.
_CARRY_PRODUCT = ("adjustment_factor", "split_coefficient")
_CARRY_SUM = ("dividend_amount",)


# --------------------------------------------------------------------------- recorder


class _Recorder:
    """Collects issues for one input and keeps the row-count ledger."""

    def __init__(self, source: str, kind: str, n_rows_in: int) -> None:
        self.report = ValidationReport(source=source, n_rows_in=n_rows_in, kind=kind)

    def add(
        self,
        rule: str,
        column: str | None,
        count: int,
        action: Action,
        message: str,
        examples: pl.DataFrame | None = None,
    ) -> None:
        text = format_examples(examples) if examples is not None else ""
        self.report.issues.append(ValidationIssue(rule, column, int(count), action, message, text))
        level = logging.INFO if action in ("info", "repaired") else logging.WARNING
        log.log(
            level,
            "%s: %s %s (%s): %d — %s",
            self.report.source,
            action,
            rule,
            column,
            count,
            message,
        )

    @property
    def has_errors(self) -> bool:
        return not self.report.ok

    def finish(
        self, df: pl.DataFrame, raise_on_error: bool, *, dated: bool = True
    ) -> tuple[pl.DataFrame, ValidationReport]:
        if ROW_TMP in df.columns:
            df = df.drop(ROW_TMP)
        report = self.report
        report.n_rows_out = df.height
        if CODE in df.columns:
            report.n_codes = int(df.get_column(CODE).n_unique())
        if dated and DATE in df.columns and df.schema[DATE] == pl.Date and df.height:
            report.date_min = df.get_column(DATE).min()  # type: ignore[assignment]
            report.date_max = df.get_column(DATE).max()  # type: ignore[assignment]
        if (
            report.ok
            and report.n_rows_in + report.n_rows_added != report.n_rows_out + report.n_dropped
        ):
            raise AssertionError(  # a bug in this module, never a data problem
                f"{report.source}: row ledger broken: {report.n_rows_in} in + "
                f"{report.n_rows_added} added "
                f"!= {report.n_rows_out} out + {report.n_dropped} dropped"
            )
        if raise_on_error:
            report.raise_if_errors()
        return df, report


# --------------------------------------------------------------------------- helpers


def _example_columns(df: pl.DataFrame, *columns: str) -> list[str]:
    wanted = [ROW_TMP, CODE, DATE, *columns]
    seen: list[str] = []
    for name in wanted:
        if name in df.columns and name not in seen:
            seen.append(name)
    return seen


def _sort_by_code_date(df: pl.DataFrame, rec: _Recorder) -> pl.DataFrame:
    """Sort by (code, date) if needed (ties keep input order) and record an info issue."""
    prev_code, prev_date = pl.col(CODE).shift(1), pl.col(DATE).shift(1)
    out_of_order = (pl.col(CODE) < prev_code) | (
        (pl.col(CODE) == prev_code) & (pl.col(DATE) < prev_date)
    )
    n_unsorted = int(df.select(out_of_order.fill_null(False).sum()).item())
    if not n_unsorted:
        return df
    rec.add(
        "unsorted",
        f"{CODE}, {DATE}",
        n_unsorted,
        "info",
        f"input not sorted by (code, date) ({n_unsorted} row(s) out of order); sorted",
    )
    return df.sort(CODE, DATE, ROW_TMP, nulls_last=True)


def _check_columns(df: pl.DataFrame, required: Iterable[str], rec: _Recorder, hint: str) -> bool:
    """Missing required columns and duplicated columns (polars renames them ``x_duplicated_0``)."""
    duplicated = [c for c in df.columns if "_duplicated_" in c]
    if duplicated:
        rec.add(
            "duplicated_columns",
            ", ".join(duplicated),
            len(duplicated),
            "error",
            f"duplicated column name(s) {duplicated} (the reader renamed the repeats); "
            f"columns present: {df.columns}",
        )
    missing = [c for c in required if c not in df.columns]
    if missing:
        rec.add(
            "missing_columns",
            ", ".join(missing),
            len(missing),
            "error",
            f"missing required column(s) {missing}; columns present: {df.columns}. {hint}",
        )
    return not (duplicated or missing)


def _parse_dates(expr: pl.Expr) -> pl.Expr:
    text = expr.str.strip_chars()
    attempts = [text.str.to_date(fmt, strict=False) for fmt in DATE_FORMATS]
    # ISO datetimes ("2021-01-04T00:00:00", "2021-01-04 09:00:00+09:00") keep their date part.
    attempts.append(text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
    return pl.coalesce(attempts)


def _coerce(df: pl.DataFrame, dtypes: dict[str, pl.DataType], rec: _Recorder) -> pl.DataFrame:
    """Cast present schema columns with strict checking; unparsable values are errors.

    Text columns are stripped of surrounding whitespace, except ``code``, which
    :func:`_normalize_codes` strips (and counts)."""
    casts: dict[str, pl.Expr] = {}
    failures: dict[str, pl.Expr] = {}
    for name, target in dtypes.items():
        if name not in df.columns or name.startswith(ORACLE_PREFIX):
            continue
        dtype = df.schema[name]
        col = pl.col(name)
        if dtype == target and target != pl.Utf8:
            casts[name] = col.fill_nan(None) if target == pl.Float64 else col
            continue
        if target == pl.Utf8:
            if dtype == pl.Utf8:
                cast = col if name == CODE else col.str.strip_chars()
            elif dtype.is_integer() or dtype in (pl.Categorical, pl.Enum) or dtype == pl.Boolean:
                cast = col.cast(pl.Utf8)
            elif dtype.is_float():
                cast = (
                    pl.when(col == col.floor()).then(col.cast(pl.Int64, strict=False)).cast(pl.Utf8)
                )
            else:
                rec.add(
                    "unparsable_values", name, df.height, "error", f"dtype {dtype} cannot be a code"
                )
                continue
            cast = pl.when(cast == "").then(None).otherwise(cast)
        elif target == pl.Date:
            if isinstance(dtype, pl.Datetime):
                cast = col.dt.date()
            elif dtype == pl.Utf8:
                cast = _parse_dates(col)
            elif dtype.is_integer():
                cast = col.cast(pl.Utf8).str.to_date("%Y%m%d", strict=False)
            else:
                rec.add(
                    "unparsable_values",
                    name,
                    df.height,
                    "error",
                    f"dtype {dtype} cannot be read as a date (expected Date, Datetime, "
                    "ISO / YYYYMMDD strings or integers)",
                )
                continue
        else:  # Float64
            if dtype.is_numeric():
                cast = col.cast(pl.Float64).fill_nan(None)
            elif dtype == pl.Utf8:
                text = col.str.strip_chars()
                cast = pl.when(text == "").then(None).otherwise(text).cast(pl.Float64, strict=False)
                cast = cast.fill_nan(None)
            else:
                rec.add(
                    "unparsable_values",
                    name,
                    df.height,
                    "error",
                    f"dtype {dtype} cannot be read as a number",
                )
                continue
        casts[name] = cast
        raw_present = col.is_not_null()
        if dtype == pl.Utf8:
            raw_present = raw_present & (col.str.strip_chars() != "")
        if dtype.is_float() and target != pl.Float64:
            raw_present = raw_present & ~col.is_nan()
        failures[name] = raw_present & cast.is_null()
    if not casts:
        return df
    fail_names = list(failures)
    checked = df.with_columns(
        [casts[n].alias(f"__cast_{n}") for n in casts]
        + [failures[n].alias(f"__fail_{n}") for n in fail_names]
    )
    counts = (
        checked.select([pl.col(f"__fail_{n}").sum() for n in fail_names]).row(0)
        if fail_names
        else ()
    )
    for name, count in zip(fail_names, counts, strict=True):
        if count:
            bad = checked.filter(pl.col(f"__fail_{name}"))
            examples = bad.select(_example_columns(df, name))
            values = bad.get_column(name).unique(maintain_order=True).head(8).to_list()
            rec.add(
                "unparsable_values",
                name,
                count,
                "error",
                f"{count} value(s) cannot be read as {dtypes[name]}, e.g. {values}",
                examples,
            )
    return checked.with_columns([pl.col(f"__cast_{n}").alias(n) for n in casts]).drop(
        [f"__cast_{n}" for n in casts] + [f"__fail_{n}" for n in fail_names]
    )


def _normalize_codes(df: pl.DataFrame, config: InputConfig, rec: _Recorder) -> pl.DataFrame:
    """Strip ticker codes of surrounding whitespace and case-fold them as ``input.code_case``
    says; report every change (``code_normalized``), spellings merged into one code
    (``code_collision``) and, with ``code_case: keep``, codes that differ only by case
    (``code_case_variants``). A code of only whitespace becomes null (``null_values``)."""
    if CODE not in df.columns or df.schema[CODE] != pl.Utf8:
        return df
    normalized = pl.col(CODE).str.strip_chars()
    if config.code_case == "upper":
        normalized = normalized.str.to_uppercase()
    elif config.code_case == "lower":
        normalized = normalized.str.to_lowercase()
    normalized = pl.when(normalized == "").then(None).otherwise(normalized)
    # One row per input spelling: cheap even for a large panel.
    spellings = (
        df.group_by(CODE)
        .agg(pl.len().alias("rows"))
        .filter(pl.col(CODE).is_not_null())
        .with_columns(normalized.alias("__normalized"))
        .filter(pl.col("__normalized").is_not_null())
        .sort("__normalized", CODE)
    )
    changed = spellings.filter(pl.col(CODE) != pl.col("__normalized"))
    if changed.height:
        n_rows = int(changed.get_column("rows").sum())
        stripped = pl.col(CODE) != pl.col(CODE).str.strip_chars()
        n_stripped = int(changed.select(stripped.sum()).item())
        n_cased = int(
            changed.select((pl.col(CODE).str.strip_chars() != pl.col("__normalized")).sum()).item()
        )
        what = [f"{n_stripped} had surrounding whitespace (stripped)"] if n_stripped else []
        if n_cased:
            what.append(f"{n_cased} {config.code_case}-cased (input.code_case: {config.code_case})")
        examples = pl.DataFrame(
            {
                "input_code": [repr(c) for c in changed.get_column(CODE).to_list()],
                CODE: [repr(c) for c in changed.get_column("__normalized").to_list()],
                "rows": changed.get_column("rows"),
            }
        )
        rec.add(
            "code_normalized",
            CODE,
            n_rows,
            "repaired",
            f"{n_rows} row(s) of {changed.height} code(s) changed: {'; '.join(what)}",
            examples,
        )
    df = df.with_columns(normalized.alias(CODE))
    merged = (
        spellings.group_by("__normalized", maintain_order=True)
        .agg(pl.col(CODE), pl.col("rows").sum())
        .filter(pl.col(CODE).list.len() > 1)
    )
    if merged.height:
        listing = [
            f"{code!r} <- {', '.join(map(repr, sources))}"
            for code, sources in merged.select("__normalized", CODE).head(20).iter_rows()
        ]
        rec.add(
            "code_collision",
            CODE,
            merged.height,
            "info",
            f"{merged.height} code(s) come from several spellings in the input and are one stock "
            f"from here on (a date they share is a duplicate (code, date)): {'; '.join(listing)}"
            f"{' …' if merged.height > 20 else ''}",
        )
    if config.code_case == "keep":
        codes = spellings.get_column("__normalized").unique()
        variants = (
            pl.DataFrame({CODE: codes})
            .with_columns(pl.col(CODE).str.to_lowercase().alias("__folded"))
            .filter(pl.len().over("__folded") > 1)
            .sort("__folded", CODE)
        )
        if variants.height:
            names = variants.get_column(CODE).to_list()
            rec.add(
                "code_case_variants",
                CODE,
                variants.height,
                "info",
                f"{variants.height} code(s) differ only by letter case and are kept as "
                f"separate stocks: {names[:20]}{' …' if len(names) > 20 else ''}; set "
                "input.code_case: upper (or lower) to make them one",
            )
    return df


def _null_rows(df: pl.DataFrame, columns: Iterable[str], rec: _Recorder, hint: str = "") -> None:
    present = [c for c in columns if c in df.columns]
    if not present:
        return
    counts = df.select([pl.col(c).null_count() for c in present]).row(0)
    for name, count in zip(present, counts, strict=True):
        if count:
            rows = df.filter(pl.col(name).is_null()).select(_example_columns(df, *present))
            rec.add(
                "null_values",
                name,
                count,
                "error",
                f"{count} row(s) with a null (or empty/NaN) {name}{hint}",
                rows,
            )


def _drop_rows(df: pl.DataFrame, drop: pl.Series, rec: _Recorder) -> pl.DataFrame:
    """Drop rows where ``drop`` is true; move their corporate-action factors forward.

    ``df`` must be sorted by (code, date). Factors of dropped rows are multiplied (dividends
    added) into the stock's next kept row, so adjustment downstream does not lose events.
    Dropped rows after a stock's last kept row have no row to move to; they lie after every
    kept date of the stock, so no kept value depends on them. A dropped row whose
    (code, date) keeps another row (a duplicate) moves nothing: the kept row stands for the day.
    """
    carry = [c for c in (*_CARRY_PRODUCT, *_CARRY_SUM) if c in df.columns]
    keep = ~drop
    if not carry:
        return df.filter(keep)
    event = pl.lit(False)
    for c in carry:
        neutral = 0.0 if c in _CARRY_SUM else 1.0
        event = event | (pl.col(c).fill_null(neutral) != neutral)
    position = pl.int_range(pl.len(), dtype=pl.Int64)
    staged = df.with_columns(keep.alias("__keep"), position.alias("__pos"))
    candidates = staged.filter(~pl.col("__keep") & event)
    if candidates.height:
        kept_keys = staged.filter(pl.col("__keep")).select(CODE, DATE)
        candidates = candidates.join(kept_keys, on=[CODE, DATE], how="anti", maintain_order="left")
    if candidates.height == 0:
        return df.filter(keep)
    # Position of the next kept row of the same stock, for every row (cheap: one group per code).
    next_kept = (
        pl.when(pl.col("__keep")).then(pl.col("__pos")).otherwise(None).backward_fill().over(CODE)
    )
    targets = staged.select(next_kept.alias("__target")).get_column("__target")
    moved = candidates.with_columns(
        targets.gather(candidates.get_column("__pos")).alias("__target")
    )
    moved = moved.filter(pl.col("__target").is_not_null())
    if moved.height == 0:
        return df.filter(keep)
    carried = moved.group_by("__target").agg(
        [
            pl.col(c).fill_null(1.0).product().alias(f"__carried_{c}")
            for c in carry
            if c in _CARRY_PRODUCT
        ]
        + [pl.col(c).fill_null(0.0).sum().alias(f"__carried_{c}") for c in carry if c in _CARRY_SUM]
    )
    out = staged.join(
        carried, left_on="__pos", right_on="__target", how="left", maintain_order="left"
    )
    out = out.with_columns(
        [
            (pl.col(c) * pl.col(f"__carried_{c}").fill_null(1.0)).alias(c)
            for c in carry
            if c in _CARRY_PRODUCT
        ]
        + [
            (pl.col(c) + pl.col(f"__carried_{c}").fill_null(0.0)).alias(c)
            for c in carry
            if c in _CARRY_SUM
        ]
    )
    rec.add(
        "moved_adjustment_events",
        ", ".join(carry),
        moved.height,
        "repaired",
        f"{moved.height} dropped row(s) carried a corporate-action factor; it was moved to the "
        "stock's next kept row",
        moved.select(_example_columns(moved, *carry)),
    )
    return out.filter(pl.col("__keep")).drop("__keep", "__pos", *[f"__carried_{c}" for c in carry])


# --------------------------------------------------------------------------- panel


_BAD_PRICE_RULES: tuple[tuple[str, str, str], ...] = (
    ("non_positive_price", "open, high, low, close", "price <= 0 or not finite"),
    ("high_below_low", "high, low", "high < low"),
    ("close_outside_range", "close", "close outside [low, high]"),
    ("open_outside_range", "open", "open outside [low, high]"),
    ("negative_volume", "volume", "volume < 0 or not finite"),
    (
        "bad_adjustment",
        "adjustment_factor, split_coefficient, dividend_amount, adjusted_close, turnover_value",
        "factor/adjusted_close <= 0 or not finite, or dividend/turnover < 0",
    ),
)


def _bad_price_exprs(columns: list[str]) -> dict[str, pl.Expr]:
    o, h, lo, c = (pl.col(x) for x in PRICE_COLUMNS)

    def not_positive(x: pl.Expr) -> pl.Expr:
        return ((x <= 0) | ~x.is_finite()).fill_null(False)

    bad_adjust = pl.lit(False)
    for name in ("adjustment_factor", "split_coefficient", "adjusted_close"):
        if name in columns:
            bad_adjust = bad_adjust | not_positive(pl.col(name))
    for name in ("dividend_amount", "turnover_value"):
        if name in columns:
            x = pl.col(name)
            bad_adjust = bad_adjust | ((x < 0) | ~x.is_finite()).fill_null(False)
    vol = pl.col("volume")
    return {
        "non_positive_price": pl.any_horizontal([not_positive(x) for x in (o, h, lo, c)]),
        "high_below_low": (h < lo).fill_null(False),
        "close_outside_range": ((c > h) | (c < lo)).fill_null(False),
        "open_outside_range": ((o > h) | (o < lo)).fill_null(False),
        "negative_volume": ((vol < 0) | ~vol.is_finite()).fill_null(False),
        "bad_adjustment": bad_adjust,
    }


def _same_key_as(offset: int) -> pl.Expr:
    """True on rows whose (code, date) is that of the row ``offset`` rows away (the frame is
    sorted by code and date, so the rows of a key are adjacent)."""
    code, date = pl.col(CODE), pl.col(DATE)
    same = (code == code.shift(offset)) & (date == date.shift(offset))
    return same.fill_null(False)


def _in_duplicate_group() -> pl.Expr:
    """True on rows whose (code, date) is on another row too."""
    return _same_key_as(1) | _same_key_as(-1)


def _resolve_duplicates(
    df: pl.DataFrame, config: InputConfig, rec: _Recorder, duplicated_before: pl.DataFrame
) -> pl.DataFrame:
    """Rule 10: duplicate (code, date) keys among the rows still here (invalid rows are gone),
    an error or resolved by ``config.on_duplicate`` in input order. ``duplicated_before``
    (row, code, date) lists the rows of duplicated keys before the invalid rows were
    dropped, so that the report says how many of them went as invalid."""
    dropped_as_invalid = duplicated_before.join(df.select(ROW_TMP), on=ROW_TMP, how="anti")
    n_invalid = dropped_as_invalid.height
    earlier = (
        f"; {n_invalid} other row(s) of duplicated keys had been dropped as invalid (counted under "
        "their rules), so each key keeps a valid row when it has one"
        if n_invalid
        else ""
    )
    dup_flags = df.select(_same_key_as(1).alias("prev"), _same_key_as(-1).alias("next"))
    in_group = dup_flags["prev"] | dup_flags["next"]
    n_dup_rows = int(in_group.sum())
    if not n_dup_rows:
        if n_invalid:
            n_keys_before = duplicated_before.select(CODE, DATE).n_unique()
            rec.add(
                "duplicate_rows",
                f"{CODE}, {DATE}",
                n_keys_before,
                "info",
                f"{n_keys_before} duplicated (code, date) key(s) in the input; {n_invalid} of "
                "their rows were dropped as invalid (counted under their rules) and each key has "
                "one valid row left: nothing more to resolve",
                dropped_as_invalid,
            )
        return df
    examples = df.filter(in_group).select(_example_columns(df, *PRICE_COLUMNS, "volume"))
    n_keys = n_dup_rows - int(dup_flags["prev"].sum())
    if config.on_duplicate == "error":
        rec.add(
            "duplicate_rows",
            f"{CODE}, {DATE}",
            n_dup_rows,
            "error",
            f"{n_dup_rows} rows share {n_keys} (code, date) key(s); set input.on_duplicate to "
            f"'first' or 'last' to keep one row per key{earlier}",
            examples,
        )
        return df
    redundant = dup_flags["prev"] if config.on_duplicate == "first" else dup_flags["next"]
    n_redundant = int(redundant.sum())
    rec.add(
        "duplicate_rows",
        f"{CODE}, {DATE}",
        n_redundant,
        "dropped",
        f"{n_keys} duplicated (code, date) key(s) among the valid rows; kept the "
        f"{config.on_duplicate} row of each in input order, dropped {n_redundant}{earlier}",
        examples,
    )
    return df.filter(~redundant)


def _price_jump_flags(df: pl.DataFrame, factor: float) -> pl.DataFrame:
    """Rule 11 on a frame sorted by (code, date): ``__jump`` (bool) with the day's and the
    next day's log return (``log_return``, ``next_log_return``) and neighbouring closes.

    The returns are those :func:`kizashi.data.panel.adjust.adjust_prices` will produce: the close
    corrected by the day's ``adjustment_factor`` (or else ``split_coefficient``), or the
    ``adjusted_close`` series when it is the only adjustment column.
    """
    columns = df.columns
    close = pl.col("close")
    if "adjustment_factor" in columns:
        series, correction = close, -pl.col("adjustment_factor").log()
    elif "split_coefficient" in columns:
        series, correction = close, pl.col("split_coefficient").log()
    elif "adjusted_close" in columns:
        series, correction = pl.col("adjusted_close"), pl.lit(0.0)
    else:
        series, correction = close, pl.lit(0.0)
    split_day = pl.lit(False)
    for name in ("adjustment_factor", "split_coefficient"):
        if name in columns:
            split_day = split_day | (pl.col(name) != 1.0).fill_null(False)
    log_return = (series / series.shift(1).over(CODE)).log() + correction
    next_log_return = pl.col("log_return").shift(-1).over(CODE)
    threshold = math.log(factor)
    staged = df.select(
        pl.col(CODE),
        log_return.alias("log_return"),
        split_day.alias("__split_day"),
        close.shift(1).over(CODE).alias("previous_close"),
        close.shift(-1).over(CODE).alias("next_close"),
    ).with_columns(
        next_log_return.alias("next_log_return"),
        pl.col("__split_day").shift(-1).over(CODE).fill_null(False).alias("__split_next"),
    )
    r, r_next = pl.col("log_return"), pl.col("next_log_return")
    jump = (
        r.is_finite()
        & r_next.is_finite()
        & (r.abs() >= threshold)
        & (r_next.abs() >= threshold)
        & (r.sign() != r_next.sign())
        & ((r + r_next).abs() <= threshold / 2)
        & ~pl.col("__split_day")
        & ~pl.col("__split_next")
    )
    return staged.with_columns(jump.fill_null(False).alias("__jump"))


def _check_price_jumps(df: pl.DataFrame, config: InputConfig, rec: _Recorder) -> pl.DataFrame:
    """Rule 11: report, drop or keep the days of isolated reversing price jumps."""
    if df.height < 3:
        return df
    flags = _price_jump_flags(df, config.price_jump_factor)
    jump = flags.get_column("__jump")
    n_jumps = int(jump.sum())
    if not n_jumps:
        return df
    factors = ("adjustment_factor", "split_coefficient", "adjusted_close")
    shown = [c for c in factors if c in df.columns]
    examples = (
        df.select(_example_columns(df, *PRICE_COLUMNS, "volume", *shown))
        .hstack(flags.select("previous_close", "next_close", "log_return", "next_log_return"))
        .filter(jump)
        .sort(pl.col("log_return").abs(), descending=True)
    )
    what = (
        f"{n_jumps} day(s) whose price jumps by a factor of {config.price_jump_factor:g} or more "
        "and jumps back the next day, with no split factor on either day (a bar in the wrong "
        "units, e.g. every price x1000)"
    )
    if config.on_price_jump == "error":
        rec.add(
            "price_jump",
            "close",
            n_jumps,
            "error",
            f"{what}; set input.on_price_jump: drop to drop them (counted) or keep to keep them "
            "(input.price_jump_factor sets the threshold)",
            examples,
        )
        return df
    if config.on_price_jump == "drop":
        df = _drop_rows(df, jump, rec)
        message = f"{what} dropped (input.on_price_jump: drop)"
        rec.add("price_jump", "close", n_jumps, "dropped", message, examples)
        return df
    message = f"{what} kept (input.on_price_jump: keep)"
    rec.add("price_jump", "close", n_jumps, "info", message, examples)
    return df


@dataclass
class _PanelState:
    """What the panel rules share: the config, the recorder, and whether to stop."""

    config: InputConfig
    rec: _Recorder
    stop: bool = False
    duplicated_before: pl.DataFrame | None = None  # rows of duplicated keys, before the drops


_PanelRule = Callable[[pl.DataFrame, _PanelState], pl.DataFrame]


def _rule_columns(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 1: ``missing_columns`` / ``duplicated_columns`` (error; stops)."""
    hint = (
        f"(column preset {state.config.preset!r}; "
        "map other names with input.columns: {source: canonical})"
    )
    state.stop = not _check_columns(df, REQUIRED_PANEL_COLUMNS, state.rec, hint)
    return df


def _rule_dtypes(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 2: ``unparsable_values`` (strict casts to the schema's dtypes; error, stops)."""
    df = _coerce(df.with_row_index(ROW_TMP, offset=1), PANEL_DTYPES, state.rec)
    state.stop = state.rec.has_errors
    return df


def _rule_codes(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 3: ``code_normalized`` / ``code_collision`` / ``code_case_variants``."""
    return _normalize_codes(df, state.config, state.rec)


def _rule_extra_columns(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """``extra_columns`` (info): columns the schema does not know, kept as they are."""
    extra = [
        c
        for c in df.columns
        if c not in PANEL_DTYPES and c != ROW_TMP and not c.startswith(ORACLE_PREFIX)
    ]
    if extra:
        state.rec.add(
            "extra_columns",
            ", ".join(extra),
            len(extra),
            "info",
            f"columns not in the schema, kept as they are: {extra}",
        )
    return df


def _rule_null_keys(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 4: null code or date (``null_values``, error)."""
    _null_rows(df, (CODE, DATE), state.rec)
    return df


def _rule_sort(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 5: ``unsorted`` (info); sorted by (code, date), ties (duplicates) in input order.

    Also keeps the rows of duplicated (code, date) keys as they are before invalid rows are
    dropped: rule 10 resolves duplicates among the valid rows and names the invalid ones."""
    df = _sort_by_code_date(df, state.rec)
    state.duplicated_before = df.filter(_in_duplicate_group()).select(ROW_TMP, CODE, DATE)
    return df


def _rule_null_adjustment(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 6: ``null_adjustment`` (repaired): a null corporate-action field means no event."""
    for name, neutral in (
        ("adjustment_factor", 1.0),
        ("split_coefficient", 1.0),
        ("dividend_amount", 0.0),
    ):
        if name in df.columns:
            n_null = df.get_column(name).null_count()
            if n_null:
                state.rec.add(
                    "null_adjustment",
                    name,
                    n_null,
                    "repaired",
                    f"{n_null} null {name} value(s) read as {neutral} (no corporate action)",
                    df.filter(pl.col(name).is_null()).select(_example_columns(df, name)),
                )
                df = df.with_columns(pl.col(name).fill_null(neutral))
    return df


def _rule_no_trade_rows(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 7: ``no_trade_rows`` (zero/null volume and no price range: dropped or info) and
    ``zero_volume_with_range`` (info)."""
    config, rec = state.config, state.rec
    prices = [pl.col(c) for c in PRICE_COLUMNS]
    zero_volume = pl.col("volume").is_null() | (pl.col("volume") == 0)
    flat = pl.max_horizontal(prices) == pl.min_horizontal(prices)
    no_trade = zero_volume & (
        pl.all_horizontal([p.is_null() for p in prices]) | flat.fill_null(False)
    )
    flags = df.select(no_trade.alias("nt"), (zero_volume & ~no_trade).alias("zr"))
    n_no_trade, n_zero_range = int(flags["nt"].sum()), int(flags["zr"].sum())
    example_cols = _example_columns(df, *PRICE_COLUMNS, "volume")
    if n_no_trade:
        examples = df.filter(flags["nt"]).select(example_cols)
        if config.drop_zero_volume:
            df = _drop_rows(df, flags["nt"], rec)
            rec.add(
                "no_trade_rows",
                "volume",
                n_no_trade,
                "dropped",
                f"{n_no_trade} row(s) with zero/null volume and no price range (holiday/halt "
                "rows) dropped (input.drop_zero_volume)",
                examples,
            )
        else:
            rec.add(
                "no_trade_rows",
                "volume",
                n_no_trade,
                "info",
                f"{n_no_trade} row(s) with zero/null volume and no price range kept "
                "(input.drop_zero_volume is false); those with null prices fail null_values",
                examples,
            )
    if n_zero_range:
        rec.add(
            "zero_volume_with_range",
            "volume",
            n_zero_range,
            "info",
            f"{n_zero_range} row(s) with zero volume but a price range, kept",
            df.filter(zero_volume & ~no_trade).select(example_cols),
        )
    return df


def _rule_null_values(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 8: remaining nulls in prices, volume and adjusted_close (``null_values``, error)."""
    required_values = [*PRICE_COLUMNS, "volume"] + (
        ["adjusted_close"] if "adjusted_close" in df.columns else []
    )
    null_hint = (
        ""
        if state.config.drop_zero_volume
        else " (no-trade rows are kept because input.drop_zero_volume is false)"
    )
    _null_rows(df, required_values, state.rec, null_hint)
    return df


def _rule_bad_values(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 9: the :data:`_BAD_PRICE_RULES` (error, or dropped with ``on_bad_price: drop``,
    each row counted once, under the first rule it breaks)."""
    config, rec = state.config, state.rec
    rules = _bad_price_exprs(df.columns)
    flagged = df.select([expr.alias(rule) for rule, expr in rules.items()])
    first_rule = pl.lit(None, dtype=pl.Utf8)
    for rule in reversed(list(rules)):
        first_rule = pl.when(pl.col(rule)).then(pl.lit(rule)).otherwise(first_rule)
    first = flagged.select(first_rule.alias("rule")).get_column("rule")
    any_bad = first.is_not_null()
    if not any_bad.any():
        return df
    first_counts = dict(first.drop_nulls().value_counts().iter_rows())
    for rule, columns, what in _BAD_PRICE_RULES:
        mask = flagged.get_column(rule)
        n_rule = int(mask.sum())
        if not n_rule:
            continue
        cols = [c.strip() for c in columns.split(",") if c.strip() in df.columns]
        examples = df.filter(mask).select(_example_columns(df, *PRICE_COLUMNS, "volume", *cols))
        if config.on_bad_price == "error":
            rec.add(
                rule,
                columns,
                n_rule,
                "error",
                f"{n_rule} row(s) with {what}; "
                "set input.on_bad_price: drop to drop them (counted)",
                examples,
            )
        elif first_counts.get(rule, 0):
            n_first = int(first_counts[rule])
            rec.add(
                rule,
                columns,
                n_first,
                "dropped",
                f"{n_first} row(s) with {what} dropped (input.on_bad_price: drop; "
                f"{n_rule} row(s) break this rule, each row counted under its first rule)",
                examples,
            )
    if config.on_bad_price == "drop":
        df = _drop_rows(df, any_bad, rec)
    return df


def _rule_duplicate_rows(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 10: duplicate (code, date) among the rows left valid, resolved in input order."""
    assert state.duplicated_before is not None  # set by _rule_sort
    return _resolve_duplicates(df, state.config, state.rec, state.duplicated_before)


def _rule_price_jumps(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 11: isolated price jumps that reverse (a bar in the wrong units)."""
    return _check_price_jumps(df, state.config, state.rec)


def _rule_short_history(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 12: ``short_history`` (info), counted, never dropped.

    The universe is point-in-time (features pipeline): a stock enters it on the day it has
    ``min_history`` rows up to that day, so whether it exists on a date never depends on
    rows after that date."""
    min_history = state.config.min_history
    if min_history <= 1 or not df.height:
        return df
    lengths = df.group_by(CODE).len().sort(CODE)
    n_before = int(lengths.get_column("len").clip(upper_bound=min_history - 1).sum())
    never = lengths.filter(pl.col("len") < min_history)
    if n_before:
        state.rec.add(
            "short_history",
            CODE,
            n_before,
            "info",
            f"{n_before} row(s) come before their stock's {min_history}th row "
            f"(input.min_history): kept for the stock's own lookbacks, outside the universe "
            f"on those days (not written, not in any cross-section); {never.height} stock(s) "
            "have fewer rows in this file and never enter it (shortest first)",
            lengths.sort("len", CODE).rename({"len": "rows"}),
        )
    return df


def _rule_gaps(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 13: ``gaps`` against the panel's own trading calendar (info)."""
    if df.height and not state.rec.has_errors:
        _report_gaps(df, state.rec)
    return df


def _rule_empty_panel(df: pl.DataFrame, state: _PanelState) -> pl.DataFrame:
    """Rule 14: ``empty_panel`` (error): no rows in the input, or none left after the drops."""
    rec = state.rec
    if df.height == 0 and not rec.has_errors:
        what = "the input has no rows" if rec.report.n_rows_in == 0 else "every row was dropped"
        rec.add("empty_panel", None, 0, "error", f"no rows left to use: {what}")
    return df


PANEL_RULES: tuple[_PanelRule, ...] = (
    _rule_columns,
    _rule_dtypes,
    _rule_codes,
    _rule_extra_columns,
    _rule_null_keys,
    _rule_sort,
    _rule_null_adjustment,
    _rule_no_trade_rows,
    _rule_null_values,
    _rule_bad_values,
    _rule_duplicate_rows,
    _rule_price_jumps,
    _rule_short_history,
    _rule_gaps,
    _rule_empty_panel,
)
"""The panel rules in the order :func:`validate_panel` applies them (a rule that sets
``stop`` ends validation)."""


def validate_panel(
    df: pl.DataFrame, source: str, config: InputConfig, *, raise_on_error: bool = True
) -> tuple[pl.DataFrame, ValidationReport]:
    """Validate and clean a raw daily panel (see the module docstring for the rules).

    Returns the panel with canonical dtypes, sorted by (code, date), and its report. With
    ``raise_on_error`` (default) any error raises one :class:`DataValidationError` listing
    all of them; otherwise the report carries them and the frame is as far as validation got.
    """
    state = _PanelState(config, _Recorder(source, "daily panel", df.height))
    for rule in PANEL_RULES:
        df = rule(df, state)
        if state.stop:
            break
    return state.rec.finish(df, raise_on_error)


def _report_gaps(df: pl.DataFrame, rec: _Recorder) -> None:
    day = pl.col(DATE).rank("dense").cast(pl.Int64)
    gaps = (
        df.select(CODE, DATE, day.alias("__day"))
        .with_columns(
            (pl.col("__day") - pl.col("__day").shift(1).over(CODE) - 1).alias("missing_days"),
            pl.col(DATE).shift(1).over(CODE).alias("previous_date"),
        )
        .filter(pl.col("missing_days") > 0)
    )
    if gaps.height:
        total = int(gaps.get_column("missing_days").sum())
        n_codes = gaps.get_column(CODE).n_unique()
        examples = gaps.sort("missing_days", descending=True).select(
            CODE, "previous_date", DATE, "missing_days"
        )
        rec.add(
            "gaps",
            DATE,
            gaps.height,
            "info",
            f"{gaps.height} gap(s) in {n_codes} stock(s): {total} trading day(s) of the panel's "
            "calendar missing between a stock's rows (largest first)",
            examples,
        )


# --------------------------------------------------------------------------- sectors


def validate_sectors(
    sectors: pl.DataFrame,
    panel_codes: Iterable[str] | pl.Series | None,
    source: str,
    config: InputConfig,
    *,
    raise_on_error: bool = True,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Validate a sector table against the panel's codes.

    Rules: ``missing_columns`` (code and ``config.sector_level``), ``unparsable_values``,
    ``code_normalized`` / ``code_collision`` / ``code_case_variants`` (as for the panel, so
    that the codes join), ``null_values`` (code), ``duplicate_rows`` (identical repeats
    dropped, conflicting ones an error), ``missing_sector`` (panel codes without a sector,
    or with a null one: error, or with ``missing_sector: unknown`` assigned ``"UNKNOWN"``:
    repaired, rows added for absent codes), ``unused_sectors`` (codes not in the panel,
    kept: info).
    """
    rec = _Recorder(source, "sector table", sectors.height)
    level = config.sector_level
    required = (CODE, level)
    hint = (
        f"(sector preset {config.sectors_preset!r}; input.sector_level is {level!r}; map other "
        "names with input.sector_columns)"
    )
    if not _check_columns(sectors, required, rec, hint):
        return rec.finish(sectors, raise_on_error, dated=False)
    df = sectors.with_row_index(ROW_TMP, offset=1)
    levels = [c for c in df.columns if c == level or c == SECTOR or c.startswith(f"{SECTOR}_")]
    df = _coerce(df, {CODE: pl.Utf8(), **{c: pl.Utf8() for c in levels}}, rec)
    if rec.has_errors:
        return rec.finish(df, raise_on_error, dated=False)
    df = _normalize_codes(df, config, rec)
    _null_rows(df, (CODE,), rec)

    value_cols = [c for c in df.columns if c != ROW_TMP]
    exact = df.select(
        pl.struct(value_cols).is_duplicated() & ~pl.struct(value_cols).is_first_distinct()
    ).to_series()
    n_exact = int(exact.sum())
    if n_exact:
        examples = df.filter(exact).select(_example_columns(df, *levels))
        df = df.filter(~exact)
        rec.add(
            "duplicate_rows",
            CODE,
            n_exact,
            "dropped",
            f"{n_exact} exact repeat row(s) dropped",
            examples,
        )
    conflict = pl.len().over(CODE) > 1
    n_conflict = int(df.select(conflict.sum()).item())
    if n_conflict:
        rows = df.filter(conflict).sort(CODE, ROW_TMP)
        codes = rows.get_column(CODE).unique(maintain_order=True).to_list()
        rec.add(
            "duplicate_rows",
            CODE,
            n_conflict,
            "error",
            f"{len(codes)} code(s) appear on several rows with different values: {codes[:20]}",
            rows.select(_example_columns(df, *levels, "name")),
        )

    null_level = df.filter(pl.col(level).is_null())
    missing_codes: list[str] = []
    if panel_codes is not None:
        codes_series = (
            panel_codes
            if isinstance(panel_codes, pl.Series)
            else pl.Series(CODE, list(panel_codes), dtype=pl.Utf8)
        )
        panel_set = codes_series.cast(pl.Utf8).unique().sort()
        missing_codes = panel_set.filter(~panel_set.is_in(df.get_column(CODE).implode())).to_list()
        unused = df.filter(~pl.col(CODE).is_in(panel_set.implode()))
        if unused.height:
            rec.add(
                "unused_sectors",
                CODE,
                unused.height,
                "info",
                f"{unused.height} code(s) in the sector table are not in the panel (kept): "
                f"{unused.get_column(CODE).to_list()[:20]}",
            )
    n_missing = len(missing_codes) + null_level.height
    if n_missing:
        listing = missing_codes[:30] + null_level.get_column(CODE).to_list()[:30]
        examples = pl.DataFrame(
            {
                CODE: listing,
                "problem": ["not in sector table"] * min(len(missing_codes), 30)
                + [f"null {level}"] * min(null_level.height, 30),
            }
        )
        if config.missing_sector == "error":
            rec.add(
                "missing_sector",
                level,
                n_missing,
                "error",
                f"{n_missing} panel code(s) have no {level!r}: {listing[:20]}"
                f"{' …' if n_missing > 20 else ''}; set input.missing_sector: unknown to assign "
                f"{UNKNOWN_SECTOR!r}",
                examples,
            )
        else:
            fill_cols = [c for c in dict.fromkeys((level, SECTOR)) if c in df.columns]
            df = df.with_columns([pl.col(c).fill_null(UNKNOWN_SECTOR) for c in fill_cols])
            if missing_codes:
                added = pl.DataFrame({CODE: missing_codes}).with_columns(
                    [pl.lit(UNKNOWN_SECTOR).alias(c) for c in fill_cols]
                )
                df = pl.concat([df, added], how="diagonal_relaxed")
                rec.report.n_rows_added = len(missing_codes)
            rec.add(
                "missing_sector",
                level,
                n_missing,
                "repaired",
                f"{n_missing} panel code(s) without a {level!r} assigned {UNKNOWN_SECTOR!r} "
                f"({len(missing_codes)} row(s) added; input.missing_sector: unknown)",
                examples,
            )
    df = df.sort(CODE, nulls_last=True)
    return rec.finish(df, raise_on_error, dated=False)


# --------------------------------------------------------------------------- margin


def validate_margin(
    margin: pl.DataFrame, source: str, config: InputConfig, *, raise_on_error: bool = True
) -> tuple[pl.DataFrame, ValidationReport]:
    """Validate weekly margin balances.

    Rules: ``missing_columns``, ``unparsable_values``, ``code_normalized`` /
    ``code_collision`` / ``code_case_variants`` (as for the panel), ``null_values`` (every
    required column), ``negative_values``, ``published_before_date`` (a balance published before the
    date it describes: error), ``duplicate_rows`` (code, date: error), ``unsorted`` (info).
    """
    rec = _Recorder(source, "margin balances", margin.height)
    hint = f"(margin preset {config.margin_preset!r}; map other names with input.margin_columns)"
    if not _check_columns(margin, REQUIRED_MARGIN_COLUMNS, rec, hint):
        return rec.finish(margin, raise_on_error)
    df = margin.with_row_index(ROW_TMP, offset=1)
    df = _coerce(df, MARGIN_DTYPES, rec)
    if rec.has_errors:
        return rec.finish(df, raise_on_error)
    df = _normalize_codes(df, config, rec)
    _null_rows(df, REQUIRED_MARGIN_COLUMNS, rec)
    shown = _example_columns(df, PUBLISHED_DATE, *MARGIN_VALUE_COLUMNS)
    negative = pl.any_horizontal([(pl.col(c) < 0).fill_null(False) for c in MARGIN_VALUE_COLUMNS])
    n_negative = int(df.select(negative.sum()).item())
    if n_negative:
        rec.add(
            "negative_values",
            ", ".join(MARGIN_VALUE_COLUMNS),
            n_negative,
            "error",
            f"{n_negative} row(s) with a negative margin balance",
            df.filter(negative).select(shown),
        )
    early = (pl.col(PUBLISHED_DATE) < pl.col(DATE)).fill_null(False)
    n_early = int(df.select(early.sum()).item())
    if n_early:
        rec.add(
            "published_before_date",
            PUBLISHED_DATE,
            n_early,
            "error",
            f"{n_early} row(s) published before the date they describe (published_date < date)",
            df.filter(early).select(shown),
        )
    dup = pl.len().over(CODE, DATE) > 1
    n_dup = int(df.select(dup.sum()).item())
    if n_dup:
        rec.add(
            "duplicate_rows",
            f"{CODE}, {DATE}",
            n_dup,
            "error",
            f"{n_dup} row(s) share a (code, date) key",
            df.filter(dup).sort(CODE, DATE, ROW_TMP).select(shown),
        )
    df = _sort_by_code_date(df, rec)
    return rec.finish(df, raise_on_error)
