"""The validation report shared by every raw input: daily panels, sector tables, margin
balances (:mod:`kizashi.data.panel.validate`) and intraday bar series
(:mod:`kizashi.data.bars.validate`).

A :class:`ValidationReport` holds the row ledger of one input (rows in, out, added and
dropped), its span, and one :class:`ValidationIssue` per rule that found something. A bar
series' report also carries the bar facts (base timeframe, duplicated timestamps, rows out
of order, flagged price ranges, off-grid bars, gaps) with :class:`RowExample` and
:class:`Gap` examples; those fields keep their defaults in the other reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

from kizashi.errors import DataValidationError

Action = Literal["error", "dropped", "repaired", "info"]

ROW = "row"
"""Name of the 1-based input row number shown in examples (kept only while validating)."""
ROW_TMP = "__kizashi_row__"
"""Column holding the 1-based input row number while an input is validated."""
N_EXAMPLES = 5

BAR_KIND = "bars"
"""``ValidationReport.kind`` of a bar series."""


@dataclass
class ValidationIssue:
    """One rule's outcome: how many rows/values, what was done, and example rows as text."""

    rule: str
    column: str | None
    count: int
    action: Action
    message: str
    examples: str = ""


@dataclass(frozen=True)
class RowExample:
    """One example of a problem: the 1-based input row, its timestamp and what is wrong."""

    row: int
    timestamp: dt.datetime | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return f"row {self.row} @ {format_time(self.timestamp)}: {self.detail}"


@dataclass(frozen=True)
class Gap:
    """Consecutive bars further apart than the base timeframe.

    ``start`` / ``end`` are the open times of the bars on either side of the gap;
    ``missing_bars`` the base-grid slots strictly between them."""

    start: dt.datetime
    end: dt.datetime
    missing_bars: int

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "missing_bars": self.missing_bars,
        }

    def __str__(self) -> str:
        return (
            f"{format_time(self.start)} -> {format_time(self.end)}: "
            f"{self.missing_bars} bar(s) missing ({self.duration})"
        )


_BAR_FIELDS = (
    "base_timeframe",
    "n_intervals_at_base",
    "first_timestamp",
    "last_timestamp",
    "duplicate_policy",
    "n_duplicate_timestamps",
    "n_duplicate_rows_dropped",
    "n_conflicting_duplicates",
    "duplicate_examples",
    "n_out_of_order",
    "out_of_order_examples",
    "n_invalid_range",
    "n_high_below_low",
    "n_open_outside_range",
    "n_close_outside_range",
    "n_nonpositive_price",
    "invalid_range_examples",
    "n_off_grid",
    "off_grid_examples",
    "n_gaps",
    "n_missing_bars",
    "largest_gaps",
)


@dataclass
class ValidationReport:
    """What validation found in one input. ``n_rows_in + n_rows_added == n_rows_out +
    n_dropped`` (the sum of the ``dropped`` issues' counts).

    Counts refer to input rows unless said otherwise; example rows are 1-based input rows.
    The fields after ``n_rows_added`` describe a bar series (``kind == "bars"``) and keep
    their defaults in other reports.
    """

    source: str
    n_rows_in: int
    n_rows_out: int = 0
    n_codes: int = 0
    date_min: dt.date | None = None
    date_max: dt.date | None = None
    issues: list[ValidationIssue] = field(default_factory=list)
    kind: str = "daily panel"
    n_rows_added: int = 0
    # Bar series only.
    base_timeframe: str | None = None
    n_intervals_at_base: int = 0  # consecutive bar pairs exactly one base timeframe apart
    first_timestamp: dt.datetime | None = None  # open time of the first output bar
    last_timestamp: dt.datetime | None = None
    duplicate_policy: str | None = None
    n_duplicate_timestamps: int = 0  # distinct timestamps that occur on more than one row
    n_duplicate_rows_dropped: int = 0  # rows removed by the policy ("first"/"last")
    n_conflicting_duplicates: int = 0  # duplicated timestamps whose rows differ in a value
    duplicate_examples: tuple[RowExample, ...] = ()
    n_out_of_order: int = 0  # rows earlier than the row just before them (output sorted)
    out_of_order_examples: tuple[RowExample, ...] = ()
    n_invalid_range: int = 0  # output bars flagged invalid_range (any of the four below)
    n_high_below_low: int = 0
    n_open_outside_range: int = 0
    n_close_outside_range: int = 0
    n_nonpositive_price: int = 0
    invalid_range_examples: tuple[RowExample, ...] = ()
    n_off_grid: int = 0  # output bars whose open time is not a multiple of the base timeframe
    off_grid_examples: tuple[RowExample, ...] = ()
    n_gaps: int = 0
    n_missing_bars: int = 0
    largest_gaps: tuple[Gap, ...] = ()

    @property
    def is_bars(self) -> bool:
        return self.kind == BAR_KIND

    @property
    def n_bars(self) -> int:
        """Bars out (one per timestamp, sorted): ``n_rows_out`` of a bar series."""
        return self.n_rows_out

    @property
    def errors(self) -> list[ValidationIssue]:
        return [issue for issue in self.issues if issue.action == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_dropped(self) -> int:
        return sum(issue.count for issue in self.issues if issue.action == "dropped")

    def counts(self) -> dict[str, int]:
        """``{rule: count}`` over all issues (a rule found on several columns is summed)."""
        out: dict[str, int] = {}
        for issue in self.issues:
            out[issue.rule] = out.get(issue.rule, 0) + issue.count
        return out

    def issue(self, rule: str) -> ValidationIssue | None:
        return next((i for i in self.issues if i.rule == rule), None)

    def error_message(self) -> str:
        errors = self.errors
        lines = [f"{self.source}: {self.kind} failed validation ({len(errors)} error(s)):"]
        for issue in errors:
            column = f" column `{issue.column}`" if issue.column else ""
            lines.append(f"- [{issue.rule}]{column}: {issue.message}")
            if issue.examples:
                lines.extend("    " + line for line in issue.examples.splitlines())
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise DataValidationError(self.error_message())

    def summary(self) -> str:
        """A few lines for logs and reports."""
        if self.is_bars:
            return self._bar_summary()
        # A table without dates (e.g. sectors) has no span to show.
        span = (
            ""
            if self.date_min is None and self.date_max is None
            else f", {self.date_min} .. {self.date_max}"
        )
        lines = [
            f"{self.source}: {self.kind}: {self.n_rows_in} rows in, {self.n_rows_out} out, "
            f"{self.n_codes} codes{span}"
        ]
        for issue in self.issues:
            column = f" [{issue.column}]" if issue.column else ""
            lines.append(
                f"  {issue.action:8s} {issue.rule}{column}: {issue.count} — {issue.message}"
            )
        return "\n".join(lines)

    def _bar_summary(self) -> str:
        """The totals, then one line per bar check with its examples."""
        share = (
            f"{self.n_intervals_at_base / (self.n_bars - 1):.1%} of intervals"
            if self.n_bars > 1
            else "set, not inferred"
        )
        span = f"{format_time(self.first_timestamp)} .. {format_time(self.last_timestamp)}"
        lines = [
            f"{self.source}: {self.n_rows_in} rows in, {self.n_bars} bars out, base timeframe "
            f"{self.base_timeframe} ({share}), {span} (bar open times)"
        ]

        def section(title: str, examples: tuple[object, ...]) -> None:
            lines.append(f"  {title}")
            lines.extend(f"      e.g. {example}" for example in examples)

        if self.n_duplicate_timestamps:
            section(
                f"duplicated timestamps: {self.n_duplicate_timestamps} timestamp(s), "
                f"{self.n_conflicting_duplicates} with differing values; policy "
                f"{self.duplicate_policy!r}: kept one row each, dropped "
                f"{self.n_duplicate_rows_dropped} row(s)",
                self.duplicate_examples,
            )
        else:
            lines.append("  duplicated timestamps: none")
        if self.n_out_of_order:
            section(
                f"out of order: {self.n_out_of_order} row(s) earlier than the row before them; "
                "output sorted by timestamp",
                self.out_of_order_examples,
            )
        else:
            lines.append("  out of order: none")
        if self.n_invalid_range:
            section(
                f"invalid price range: {self.n_invalid_range} bar(s) kept and flagged "
                f"invalid_range (high < low: {self.n_high_below_low}, open outside "
                f"[low, high]: {self.n_open_outside_range}, close outside: "
                f"{self.n_close_outside_range}, price <= 0: {self.n_nonpositive_price})",
                self.invalid_range_examples,
            )
        else:
            lines.append("  invalid price range: none")
        if self.n_off_grid:
            section(
                f"off the {self.base_timeframe} grid: {self.n_off_grid} bar(s) whose open time "
                "is not a multiple of the base timeframe (resampling refuses them)",
                self.off_grid_examples,
            )
        if self.n_gaps:
            section(
                f"gaps: {self.n_gaps}, {self.n_missing_bars} {self.base_timeframe} bar(s) missing "
                f"in all; largest:",
                self.largest_gaps,
            )
        else:
            lines.append("  gaps: none")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: dates and datetimes as ISO strings, examples as dicts. A bar
        series' report adds ``n_bars`` and the bar fields."""
        out: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            "n_rows_in": self.n_rows_in,
            "n_rows_out": self.n_rows_out,
            "n_rows_added": self.n_rows_added,
            "n_codes": self.n_codes,
            "date_min": self.date_min.isoformat() if self.date_min else None,
            "date_max": self.date_max.isoformat() if self.date_max else None,
            "ok": self.ok,
            "issues": [asdict(issue) for issue in self.issues],
        }
        if self.is_bars:
            out["n_bars"] = self.n_bars
            for name in _BAR_FIELDS:
                value = getattr(self, name)
                if isinstance(value, dt.datetime):
                    value = value.isoformat()
                elif isinstance(value, tuple):
                    value = [item.to_dict() for item in value]
                out[name] = value
        return out


def format_time(value: dt.datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS[.ffffff] UTC`` (``-`` for None)."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + " UTC"


def format_examples(rows: pl.DataFrame, n: int = N_EXAMPLES) -> str:
    """A small text table of example rows (the first ``n``)."""
    if rows.is_empty():
        return ""
    shown = rows.head(n)
    if ROW_TMP in shown.columns:
        name = ROW if ROW not in shown.columns else "input_row"
        shown = shown.rename({ROW_TMP: name})
    with pl.Config(
        tbl_rows=n,
        tbl_cols=-1,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_formatting="ASCII_MARKDOWN",
        tbl_width_chars=240,
        fmt_str_lengths=48,
        float_precision=None,
    ):
        text = str(shown)
    more = rows.height - shown.height
    return text + (f"\n… and {more} more row(s)" if more > 0 else "")
