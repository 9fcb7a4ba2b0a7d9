"""Typed configs (pydantic v2) loaded from YAML.

Every config model forbids unknown keys. :func:`load_config` turns pydantic's and YAML's
errors into a :class:`~kizashi.errors.ConfigError` that names the file and the dotted key.

Input paths written in a YAML file (``input.path``, ``data_config``, ``data.paths``, ...)
are relative to that file's folder; ``--set`` overrides and ``--data`` are relative to the
working directory; ``~`` is expanded in both. Output folders (``output.dir``) stay relative
to the working directory, so runs land where the command is run (:func:`anchor_paths`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kizashi.errors import ConfigError


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # The file (or "command line") a loaded config came from, for errors found later, e.g. a
    # calendar too short for the splits (see config_source); not a key, never dumped.
    _source: str | None = PrivateAttr(default=None)


class SyntheticMarketConfig(StrictModel):
    """The embedded default data set: a deterministic synthetic market (:mod:`kizashi.data.synthetic.daily`)."""

    n_stocks: int = Field(300, ge=2)
    n_sectors: int = Field(8, ge=1)
    n_days: int = Field(1000, ge=30)
    start_date: dt.date = dt.date(2016, 1, 4)
    seed: int = 7
    n_peer_groups: int = Field(30, ge=1)
    split_probability: float = Field(0.002, ge=0.0, le=1.0, description="per stock-year")
    late_listing_fraction: float = Field(0.2, ge=0.0, le=1.0)
    signal_strength: float = Field(1.0, ge=0.0, description="scale of the planted signal")
    with_margin: bool = True


class InputConfig(StrictModel):
    """Where raw data comes from. ``path: null`` means the synthetic market."""

    path: Path | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    separator: str | None = Field(None, description="CSV delimiter; sniffed when null")
    preset: str = Field("canonical", description="column-mapping preset (data/schema.py)")
    columns: dict[str, str] = Field(default_factory=dict, description="source -> canonical")
    code_from_filename: str | None = Field(
        None, description="regex with one group: read the code from each file name in a folder"
    )
    code_case: Literal["keep", "upper", "lower"] = Field(
        "keep",
        description="ticker codes are always stripped of whitespace; upper/lower also case-fold them "
        "(panel, sectors and margin alike; every change is counted)",
    )
    skip_bad_files: bool = False
    sectors: Path | None = None
    sectors_preset: str = "canonical"
    sector_columns: dict[str, str] = Field(default_factory=dict)
    sector_level: str = Field("sector", description="sector column used for aggregates")
    missing_sector: Literal["error", "unknown"] = "error"
    margin: Path | None = None
    margin_preset: str = "canonical"
    margin_columns: dict[str, str] = Field(default_factory=dict)
    on_duplicate: Literal["error", "first", "last"] = "error"
    drop_zero_volume: bool = Field(
        True, description="drop rows with zero volume and no price move (holidays, halts)"
    )
    on_bad_price: Literal["error", "drop"] = Field(
        "error", description="non-positive prices, high < low, close outside [low, high]"
    )
    on_price_jump: Literal["error", "drop", "keep"] = Field(
        "error",
        description="a day whose price jumps by price_jump_factor or more and jumps back the next "
        "day, with no split factor on either day (a vendor error such as a x1000 bar): an error, "
        "dropped (counted), or kept (reported)",
    )
    price_jump_factor: float = Field(
        3.0, gt=1.0, description="the smallest one-day price ratio (up or down) that counts as a jump"
    )
    min_history: int = Field(
        1,
        ge=1,
        description="a stock enters the universe on the day it has this many rows up to that day "
        "(point-in-time; earlier rows feed only its own lookbacks)",
    )


class FeatureConfig(StrictModel):
    families: list[str] | Literal["all"] = "all"
    exclude_families: list[str] = Field(default_factory=list)
    dtype: Literal["float32", "float64"] = "float32"


class TargetConfig(StrictModel):
    """Forward returns over ``horizons`` trading days of the market calendar."""

    horizons: list[int] = Field(default_factory=lambda: [1, 5, 10, 20])
    fill_end_days: int = Field(
        0,
        ge=0,
        le=20,
        description="when a stock has no close h sessions ahead, use its next close if it is at most "
        "this many sessions later (0: the target is null); the purge grows by the same amount",
    )

    @field_validator("horizons")
    @classmethod
    def _positive(cls, horizons: list[int]) -> list[int]:
        if not horizons or any(h < 1 for h in horizons):
            raise ValueError("horizons must be a non-empty list of positive integers")
        if len(set(horizons)) != len(horizons):
            raise ValueError(f"horizons: duplicates in {horizons}")
        return horizons


class NormalizationConfig(StrictModel):
    """Per-day cross-sectional normalization of continuous features."""

    method: Literal["robust", "zscore", "none"] = Field(
        "zscore", description="zscore (mean/std) or robust (median/MAD, ~2x the build time)"
    )
    clip: float = Field(5.0, gt=0, description="winsorize normalized values to [-clip, clip]")


class SplitConfig(StrictModel):
    """Walk-forward folds: train (expanding or rolling) -> gap -> test."""

    n_folds: int = Field(4, ge=1)
    test_days: int = Field(120, ge=1)
    train_days: int | None = Field(None, description="rolling train window; null = expanding")
    min_train_days: int = Field(250, ge=1)
    val_days: int = Field(0, ge=0, description="validation slice carved from the train end")
    purge_days: int | None = Field(None, description="null = the longest target horizon")
    embargo_days: int = Field(20, ge=0)
    fit_to_data: bool = Field(
        False,
        description="choose n_folds, test_days and min_train_days from the data's calendar "
        "(kizashi.splits.fit_splits_to_calendar); `--data` sets it when no splits are configured",
    )


#: The fewest joint trading days a graph correlation may rest on (``graph.min_periods``);
#: for windows shorter than twice this, half the window.
MIN_GRAPH_PERIODS = 20


class GraphConfig(StrictModel):
    """Per-day stock graphs from rolling return correlation (:mod:`kizashi.features.graph`).

    ``min_periods`` (joint days a pair needs in the window) must lie in
    ``[min(MIN_GRAPH_PERIODS, ceil(window / 2)), window]``: at least 20 days, or half of a
    window shorter than 40 days, so that no edge rests on a handful of days (two days give
    |corr| = 1); null = 2/3 of the window, which always lies in that range.
    """

    enabled: bool = True
    window: int = Field(60, ge=10, description="trading days of returns per correlation")
    min_periods: int | None = Field(
        None,
        description="joint days a pair needs: at least 20 (half of a window under 40) and at most "
        "the window; null = 2/3 of the window",
    )
    top_k: int | None = Field(10, ge=1)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="keep |corr| >= this")
    every_n_days: int = Field(1, ge=1)
    symmetric: bool = False
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="precision of the correlation sums (float32: ~1e-5, ~1.5x faster)"
    )

    @field_validator("min_periods")
    @classmethod
    def _min_periods_fit_the_window(cls, min_periods: int | None, info: ValidationInfo) -> int | None:
        window = info.data.get("window")
        if min_periods is None or window is None:  # an invalid window is reported at graph.window
            return min_periods
        lowest = min(MIN_GRAPH_PERIODS, math.ceil(window / 2))
        if min_periods < lowest:
            why = (
                ""
                if lowest == MIN_GRAPH_PERIODS
                else f" (half of graph.window {window}; {MIN_GRAPH_PERIODS} for windows of "
                f"{2 * MIN_GRAPH_PERIODS} days or more)"
            )
            raise ValueError(
                f"must be at least {lowest} trading days{why}: a correlation over fewer days is "
                "noise (2 days give |corr| = 1); null = 2/3 of the window"
            )
        if min_periods > window:
            raise ValueError(f"must be at most graph.window ({window}): no stock could ever be a node")
        return min_periods

    @model_validator(mode="after")
    def _some_rule(self) -> GraphConfig:
        if self.top_k is None and self.threshold is None:
            raise ValueError("graph needs top_k, threshold, or both")
        return self


class OutputConfig(StrictModel):
    dir: Path = Path("artifacts/dataset")
    chunk_rows: int = Field(
        600_000,
        ge=1_000,
        description="about this many stock-days are built per chunk (plus warm-up rows); bounds memory",
    )


class DataBuildConfig(StrictModel):
    """`kizashi data build` — raw quotes to a model-ready dataset.

    Every key but ``output`` decides the dataset's content (:data:`DATASET_NEUTRAL_KEYS`).
    The walk-forward folds are not a dataset setting: ``splits`` lives in the evaluate and
    train configs, which cut the folds."""

    input: InputConfig = Field(default_factory=InputConfig)
    synthetic: SyntheticMarketConfig = Field(default_factory=SyntheticMarketConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    targets: TargetConfig = Field(default_factory=TargetConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    # Not a data setting: present only to refuse it with the place it belongs (never dumped).
    splits: None = Field(None, exclude=True, description="set in the evaluate / train config")

    @field_validator("splits", mode="before")
    @classmethod
    def _splits_belong_to_the_jobs(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "`splits` is not a data setting: the walk-forward folds are set once, in the evaluate "
                "or train config (top-level `splits:`); remove it from the data config"
            )
        return None


#: DataBuildConfig sections that do not change a dataset's content (where it is written and
#: how much is built at once); a dataset is reused when every other key and the inputs agree.
DATASET_NEUTRAL_KEYS = ("output",)


class LightGBMConfig(StrictModel):
    """The gradient-boosting baseline (LightGBM), trained once per fold and horizon."""

    label: Literal["rank", "return"] = Field(
        "rank", description="rank: the per-day percentile rank of the forward return, centred; return: the raw return"
    )
    n_estimators: int = Field(1000, ge=1, description="maximum boosting rounds (early stopping picks fewer)")
    learning_rate: float = Field(0.02, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(1000, ge=1)
    feature_fraction: float = Field(0.2, gt=0, le=1)
    bagging_fraction: float = Field(0.7, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(10.0, ge=0)
    max_bin: int = Field(63, ge=2)
    early_stopping_rounds: int = Field(100, ge=1)
    num_threads: int = Field(0, ge=0, description="0 = every core")
    params: dict[str, Any] = Field(default_factory=dict, description="extra LightGBM parameters, passed through")


class LongShortLegsConfig(StrictModel):
    """The legs of the daily-rebalanced, equal-weight long-short book of a run's metrics."""

    top_k: int | None = Field(None, ge=1, description="names per leg; null = use quantile")
    quantile: float = Field(0.1, gt=0, le=0.5, description="share of the day's stocks per leg")


class LongShortConfig(LongShortLegsConfig):
    """The daily long-short book with its linear cost (:mod:`kizashi.evaluation.backtest`).
    In a job config the legs live in ``metrics.long_short`` and the cost in
    ``portfolio.costs.cost_bps`` (one home for the cost of every book)."""

    cost_bps: float = Field(10.0, ge=0, description="one-way cost per unit of turnover, basis points")


class MetricsConfig(StrictModel):
    n_quantiles: int = Field(10, ge=2)
    long_short: LongShortLegsConfig = Field(default_factory=LongShortLegsConfig)
    periods_per_year: int = Field(252, ge=1)

    @field_validator("long_short", mode="before")
    @classmethod
    def _cost_has_one_home(cls, value: Any) -> Any:
        if isinstance(value, dict) and "cost_bps" in value:
            raise ValueError(
                "cost_bps moved to `portfolio.costs.cost_bps` (one home for the cost of every book, "
                "the metrics' long-short included); delete it here and set it there"
            )
        return value


# ---------------------------------------------------------------- portfolio (kizashi.portfolio)
# A strategy is one block with a ``kind`` discriminator::
#
#     portfolio:
#       strategies:
#         daily_decile: {kind: decile}
#         weekly:       {kind: rebalance_every, every: 5}
#         sticky:       {kind: hysteresis, enter_quantile: 0.1, exit_quantile: 0.2}
#         smooth:       {kind: ema, halflife: 5}
#         qlib:         {kind: topk_dropout, top_k: 50, n_drop: 5}
#         long_only:    {kind: long_only_topk, top_k: 50}
#         by_sector:    {kind: sector_neutral}
#         hedged:       {kind: beta_neutral}
#
# Leg sizes follow kizashi.evaluation.backtest: ``top_k`` names if set, else
# ``max(1, floor(quantile * n))`` of the day's ``n`` eligible names, capped at ``n // 2`` for a
# long-short book (at ``n`` for a long-only one).

Side = Literal["long_short", "long_only"]


class _Legs(StrictModel):
    """Leg size: ``top_k`` names per leg, else ``quantile`` of the day's eligible names."""

    top_k: int | None = Field(None, ge=1, description="names per leg; null = use quantile")
    quantile: float = Field(
        0.1, gt=0, le=0.5, description="share of the day's eligible names per leg"
    )


class DecileStrategy(_Legs):
    """Today's daily-rebalanced equal-weight top/bottom long-short (evaluation.backtest)."""

    kind: Literal["decile"] = "decile"


class RebalanceEveryStrategy(_Legs):
    """The decile book chosen every ``every`` portfolio days and held in between."""

    kind: Literal["rebalance_every"] = "rebalance_every"
    every: int = Field(5, ge=1, description="portfolio days between rebalances")
    offset: int = Field(0, ge=0, description="first rebalance on portfolio day `offset % every`")
    side: Side = "long_short"


class HysteresisStrategy(StrictModel):
    """Rank buffer: a name enters a leg in the top ``enter_quantile``, leaves below ``exit_quantile``."""

    kind: Literal["hysteresis"] = "hysteresis"
    enter_quantile: float = Field(0.1, gt=0, le=0.5)
    exit_quantile: float = Field(0.2, gt=0, le=0.5)
    side: Side = "long_short"

    @model_validator(mode="after")
    def _ordered(self) -> HysteresisStrategy:
        if self.exit_quantile < self.enter_quantile:
            raise ValueError(
                f"exit_quantile ({self.exit_quantile}) must be >= enter_quantile ({self.enter_quantile})"
            )
        return self


class EmaStrategy(_Legs):
    """The decile book on an exponential moving average of each name's (normalized) score."""

    kind: Literal["ema"] = "ema"
    halflife: float = Field(5.0, gt=0, description="portfolio days for a score's weight to halve")
    normalize: Literal["rank", "zscore", "none"] = Field(
        "rank", description="per-day transform of the predictions before smoothing"
    )
    side: Side = "long_short"


class TopkDropoutStrategy(StrictModel):
    """Qlib's TopkDropout: hold ``top_k`` names per leg, replace at most ``n_drop`` per day."""

    kind: Literal["topk_dropout"] = "topk_dropout"
    top_k: int = Field(50, ge=1)
    n_drop: int = Field(5, ge=0)
    side: Side = "long_short"


class LongOnlyTopkStrategy(_Legs):
    """Daily equal-weight long-only top names; judged against the equal-weight universe (IR)."""

    kind: Literal["long_only_topk"] = "long_only_topk"
    top_k: int | None = Field(50, ge=1, description="names held; null = use quantile")


class SectorNeutralStrategy(StrictModel):
    """Long top / short bottom ``quantile`` within each sector; sector budgets ~ sector size."""

    kind: Literal["sector_neutral"] = "sector_neutral"
    quantile: float = Field(0.1, gt=0, le=0.5)


class BetaNeutralStrategy(_Legs):
    """The decile book with its legs scaled so that ``sum_i w_i * beta_i = 0`` (gross kept at 2)."""

    kind: Literal["beta_neutral"] = "beta_neutral"


StrategySettings = Annotated[
    DecileStrategy
    | RebalanceEveryStrategy
    | HysteresisStrategy
    | EmaStrategy
    | TopkDropoutStrategy
    | LongOnlyTopkStrategy
    | SectorNeutralStrategy
    | BetaNeutralStrategy,
    Field(discriminator="kind"),
]


class ImpactSettings(StrictModel):
    """Square-root market impact (see :mod:`kizashi.portfolio.costs`)."""

    book_size: float = Field(
        1e8, gt=0, description="capital of the book, currency units (a long leg of 1 = book_size)"
    )
    coefficient: float = Field(1.0, ge=0, description="Y of cost = Y * sigma * sqrt(participation)")
    volatility: float | None = Field(
        None,
        gt=0,
        description="daily volatility for every name; null = the market's `volatility` column",
    )


class CostSettings(StrictModel):
    """Linear cost per unit of turnover plus an optional square-root impact term."""

    cost_bps: float = Field(
        10.0, ge=0, description="one-way cost per unit of turnover, basis points"
    )
    impact: ImpactSettings | None = None


class TradabilitySettings(StrictModel):
    """Whether blocked trades are refused (see :mod:`kizashi.portfolio.tradability`)."""

    enforce: bool = Field(True, description="refuse trades the market frame marks as impossible")


class MarketSettings(StrictModel):
    """How :func:`kizashi.portfolio.market.market_frame` derives the market columns from a panel."""

    dollar_volume_window: int = Field(
        20, ge=1, description="sessions in the average daily dollar volume"
    )
    volatility_window: int = Field(20, ge=2, description="sessions in the daily-return volatility")
    beta_window: int = Field(
        60, ge=2, description="sessions in the beta against the equal-weight market"
    )
    daily_limit: float | None = Field(
        None,
        gt=0,
        description="price limit as a fraction (0.1 = +-10 %) when no limit flags are given",
    )
    upper_limit_column: str = Field(
        "upper_limit", description="flag column: closed at the upper limit"
    )
    lower_limit_column: str = Field(
        "lower_limit", description="flag column: closed at the lower limit"
    )


SelectionMetric = Literal["net_sharpe", "net_annual_return", "information_ratio"]


class PortfolioSettings(StrictModel):
    """Everything the portfolio library needs: named strategies, costs, tradability, market data."""

    strategies: dict[str, StrategySettings] | None = Field(
        None,
        description="the candidate books, by name; null = the standard set "
        "(kizashi.portfolio.overview: daily decile, rebalance every 5 days, hysteresis 10/20 %, "
        "EMA of scores, TopkDropout holding 10 % of the median universe)",
    )
    costs: CostSettings = Field(default_factory=CostSettings)
    tradability: TradabilitySettings = Field(default_factory=TradabilitySettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    selection_metric: SelectionMetric = "net_sharpe"

    @model_validator(mode="after")
    def _some_strategy(self) -> PortfolioSettings:
        if self.strategies is not None and not self.strategies:
            raise ValueError("strategies: name at least one strategy (or null for the standard set)")
        return self


class SignalConfig(StrictModel):
    """A one-feature baseline: the prediction is ``sign`` x the feature (no fitting)."""

    feature: str
    sign: Literal[1, -1] = 1


class RunOutputConfig(StrictModel):
    dir: Path = Path("artifacts/runs/lightgbm")


class EvaluateConfig(StrictModel):
    """`kizashi evaluate` - walk-forward fit / predict / evaluate of the LightGBM baseline.

    ``data_config`` names a data-build YAML; the ``data`` section is merged over it. The
    dataset is built into ``data.output.dir`` unless one built from the same config is there.
    """

    data_config: Path | None = None
    data: DataBuildConfig = Field(default_factory=DataBuildConfig)
    horizons: list[int] | None = Field(None, description="null = every target horizon of the dataset")
    features: list[str] | None = Field(None, description="feature columns to use; null = all")
    splits: SplitConfig = Field(default_factory=lambda: SplitConfig(val_days=60))
    model: LightGBMConfig = Field(default_factory=LightGBMConfig)
    signal: SignalConfig | None = Field(None, description="set: evaluate sign x feature instead of LightGBM")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    portfolio: PortfolioSettings = Field(
        default_factory=PortfolioSettings,
        description="books on the predictions, chosen on validation slices; the cost of every book",
    )
    seed: int = 0
    output: RunOutputConfig = Field(default_factory=RunOutputConfig)
    caveats: list[str] = Field(default_factory=list, description="data caveats shown in reports")


class ModelSpec(StrictModel):
    """A model from the registry (``kizashi.models.create_model``): name, preset, overrides."""

    name: str = "atft_gat_fan"
    preset: str | None = "small"
    overrides: dict[str, Any] = Field(default_factory=dict, description="config fields of the model")


class LossSettings(StrictModel):
    huber_delta: float = Field(1.0, gt=0, description="Huber loss delta (targets are scaled per day, see target)")
    horizon_weights: list[float] | None = Field(None, description="e.g. [1.0, 0.8, 0.7, 0.5]; null = equal")
    quantile_weight: float = Field(1.0, ge=0, description="weight of the pinball loss of the quantile heads")
    rank_weight: float = Field(0.0, ge=0, description="weight of the per-day correlation-aware term")


class OptimizerSettings(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="not applied to norms, biases, LayerScale")
    lr_factors: dict[str, float] = Field(default_factory=dict, description="module-name prefix -> lr factor")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null = no clipping")
    warmup_steps: int = Field(0, ge=0)


class TrainerSettings(StrictModel):
    """How the Lightning trainer runs (``kizashi train``)."""

    max_epochs: int = Field(10, ge=1)
    days_per_batch: int = Field(4, ge=1, description="trading days per optimizer step (one graph batch)")
    accelerator: str = "auto"
    devices: int | str = Field(1, description="GPUs (or 'auto'); >1 uses DDP")
    precision: str = Field("auto", description="auto = bf16-mixed on CUDA, 32-true on CPU")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA teacher for evaluation, e.g. 0.999")
    nan_guard_limit: int = Field(20, ge=1, description="stop after this many skipped non-finite steps")
    num_workers: int = Field(0, ge=0)
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    early_stopping_patience: int | None = Field(3, ge=1, description="epochs without validation RankIC@first horizon gain")
    val_check_interval: float = Field(1.0, gt=0)
    limit_train_batches: int | float | None = None
    panel_on_device: Literal["auto", "on", "off"] = Field(
        "auto",
        description="hold the feature panel on the training device and gather windows there "
        "(auto = on CUDA when it takes at most half the GPU's memory)",
    )


class TrainConfig(StrictModel):
    """`kizashi train` - walk-forward training of a neural model (ATFT-GAT-FAN by default).

    ``data_config`` / ``data`` as in :class:`EvaluateConfig`. For every fold (or those in
    ``folds``) the model is trained on the training days, validated on the validation slice
    and predicts the test days; the run directory is written in the same format as
    ``kizashi evaluate`` (summary, daily, deciles, folds), so ``kizashi report`` works on it.
    """

    data_config: Path | None = None
    data: DataBuildConfig = Field(default_factory=DataBuildConfig)
    horizons: list[int] | None = Field(None, description="null = every target horizon of the dataset")
    window: int = Field(20, ge=1, description="trading days of history per stock (L)")
    target: Literal["return", "rank"] = Field("rank", description="training target: per-day rank (centred) or return")
    splits: SplitConfig = Field(default_factory=lambda: SplitConfig(val_days=60))
    folds: list[int] | None = Field(None, description="fold indices to train; null = all")
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: LossSettings = Field(default_factory=LossSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    portfolio: PortfolioSettings = Field(
        default_factory=PortfolioSettings,
        description="books on the predictions, chosen on validation slices; the cost of every book",
    )
    seed: int = 0
    output: RunOutputConfig = Field(default_factory=lambda: RunOutputConfig(dir=Path("artifacts/runs/atft_gat_fan")))
    caveats: list[str] = Field(default_factory=list)


ModelT = TypeVar("ModelT", bound=BaseModel)


def format_config_problems(source: str, problems: list[tuple[str, str]], note: str = "") -> str:
    """The one layout of every config error: ``SOURCE: invalid config (n problem(s))``, then
    one ``key `dotted.key`: message`` line per problem."""
    lines = [f"{source}: invalid config ({len(problems)} problem(s)){note}"]
    lines.extend(f"  key `{key}`: {message}" for key, message in problems)
    return "\n".join(lines)


def _dotted_keys(mapping: dict[str, Any], prefix: str = "") -> set[str]:
    """Every dotted key path of a nested mapping (``{"a": {"b": 1}}`` -> ``{"a", "a.b"}``)."""
    keys: set[str] = set()
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, f"{dotted}.")
    return keys


def _format_validation_error(
    err: ValidationError, source: str, note: str = "", command_line: set[str] = frozenset()
) -> str:
    problems: list[tuple[str, str]] = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "value_error" and "error" in item.get("ctx", {}):
            msg = str(item["ctx"]["error"])  # a validator's own sentence, without "Value error, "
        else:
            msg = item["msg"]
        given = item.get("input")
        shown = "" if item["type"] == "extra_forbidden" or isinstance(given, dict) else f" (got {given!r})"
        given_by = " (given by --set)" if key in command_line else ""
        problems.append((key, f"{msg}{shown}{given_by}"))
    return format_config_problems(source, problems, note)


def config_from_dict(
    model: type[ModelT],
    data: dict[str, Any],
    source: str = "<dict>",
    *,
    note: str = "",
    overrides: dict[str, Any] | None = None,
) -> ModelT:
    """Validate ``data`` into ``model``; a :class:`ConfigError` names ``source`` and each dotted
    key (``note`` is appended to its first line; a key that ``overrides``, the command line's
    ``--set``, gave is marked so). The config remembers ``source`` (:func:`config_source`)."""
    try:
        config = model.model_validate(data)
    except ValidationError as err:
        keys = _dotted_keys(overrides) if overrides else set()
        raise ConfigError(_format_validation_error(err, source, note, keys)) from None
    if isinstance(config, StrictModel):
        config._source = source
    return config


def config_source(config: StrictModel) -> str:
    """The file a config was loaded from (``"command line"``, ``"<dict>"`` ...), for errors
    that can only be found once its inputs are read."""
    return config._source or "<config>"


def _first_duplicate_key(root: yaml.Node) -> tuple[str, yaml.Node, yaml.Node] | None:
    """``(dotted key, first key node, repeated key node)`` of the first mapping in ``root``
    that repeats a key, or None. Merge keys (``<<: *anchor``) may be overridden: only keys
    written in the mapping itself count."""
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    seen_nodes: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # an alias of a node already checked
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    stack.append((value_node, path))
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in first:
                    return ".".join((*path, str(key))), first[key], key_node
                first[key] = key_node
                stack.append((value_node, (*path, str(key))))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))
    return None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping. Errors name the file: missing, not UTF-8, not valid
    YAML, empty (no keys), a key repeated in one mapping (with its dotted key and both
    lines: YAML would silently keep the last), or a top level that is not a mapping."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{file}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.end]!r})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(
                f"{file}: empty config file (no keys); write the keys to change, or `{{}}` for every default"
            )
        duplicate = _first_duplicate_key(node)
        if duplicate is not None:
            key, first, repeated = duplicate
            raise ConfigError(
                f"{file}: duplicate key `{key}` at line {repeated.start_mark.line + 1} "
                f"(first at line {first.start_mark.line + 1}); YAML would keep only the last value"
            )
        data = loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


#: Sections whose paths are written, not read: they stay relative to the working directory.
OUTPUT_SECTIONS = ("output",)


def _path_kind(annotation: Any) -> str | None:
    """``"path"`` for ``Path`` / ``Path | None``, ``"paths"`` for ``list[Path]``, else None."""
    if annotation is Path:
        return "path"
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = {_path_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is list and get_args(annotation) == (Path,):
        return "paths"
    return None


def _config_model(annotation: Any) -> type[BaseModel] | None:
    """The config model behind ``annotation`` (``Model`` or ``Model | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [arg for arg in get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _anchor(value: Any, folder: Path) -> Any:
    if not isinstance(value, (str, Path)) or str(value) == "":
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else folder / path)


def anchor_paths(data: dict[str, Any], model: type[BaseModel], folder: str | Path) -> dict[str, Any]:
    """``data`` (a mapping for ``model``, as read from YAML or ``--set``) with every relative
    input path made absolute against ``folder`` and ``~`` expanded: the fields typed ``Path``
    or ``list[Path]``, in nested sections too, except those under :data:`OUTPUT_SECTIONS`.
    Values of the wrong type are left for validation to report."""
    folder = Path(folder).expanduser().absolute()
    anchored = dict(data)
    for name, field in model.model_fields.items():
        if name not in anchored or name in OUTPUT_SECTIONS:
            continue
        value = anchored[name]
        kind = _path_kind(field.annotation)
        if kind == "path":
            anchored[name] = _anchor(value, folder)
        elif kind == "paths" and isinstance(value, list):
            anchored[name] = [_anchor(item, folder) for item in value]
        elif isinstance(value, dict) and (section := _config_model(field.annotation)) is not None:
            anchored[name] = anchor_paths(value, section, folder)
    return anchored


def read_config_file(path: str | Path, model: type[BaseModel]) -> dict[str, Any]:
    """:func:`read_yaml`, with the file's input paths anchored at its folder (:func:`anchor_paths`)."""
    return anchor_paths(read_yaml(path), model, Path(path).expanduser().parent)


def load_config(path: str | Path, model: type[ModelT], overrides: dict[str, Any] | None = None) -> ModelT:
    """Load a YAML file into ``model``. Errors name the file and the dotted key. Input paths
    are relative to the file; those in ``overrides`` to the working directory."""
    data = read_config_file(path, model)
    if overrides:
        data = deep_merge(data, anchor_paths(overrides, model, Path.cwd()))
    return config_from_dict(model, data, source=str(path), overrides=overrides)


def load_job_config(
    path: str | Path | None, model: type[ModelT], overrides: dict[str, Any] | None = None
) -> ModelT:
    """A job config (:class:`EvaluateConfig`, :class:`TrainConfig`) from YAML (``None`` =
    defaults): the file named by its ``data_config`` key is read first and the file's own
    ``data`` section merged over it.

    Paths in each file are relative to that file (``data_config`` to the job file, the data
    config's ``input.path`` to the data config); :func:`anchor_paths`.

    An error in the ``data_config`` file is reported against that file (its keys as there,
    e.g. ``graph.window``); an error in the job file, or one that only the merge produces,
    against the job file (``data.graph.window``)."""
    source = str(path) if path is not None else "<defaults>"
    data = read_config_file(path, model) if path is not None else {}
    if overrides:
        data = deep_merge(data, anchor_paths(overrides, model, Path.cwd()))
    data_config = data.get("data_config")
    own_data = data.get("data") or {}
    note = ""
    data_source = source
    if data_config:
        if not Path(data_config).is_file():
            raise ConfigError(
                f"{source}: data_config: file not found: {data_config} (a path in a config file is relative "
                "to that file's folder; on the command line, to the working directory)"
            )
        base = read_config_file(data_config, DataBuildConfig)
        config_from_dict(DataBuildConfig, base, source=str(data_config), note=f" (the data_config of {source})")
        data = {**data, "data": deep_merge(base, own_data)}
        note = f" (its data section is merged over the data_config {data_config})"
        data_source = f"{source} (data, merged over {data_config})" if own_data else str(data_config)
    config = config_from_dict(model, data, source=source, note=note, overrides=overrides)
    data_section = getattr(config, "data", None)
    if isinstance(data_section, DataBuildConfig):
        data_section._source = data_source
    return config


def load_evaluate_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> EvaluateConfig:
    return load_job_config(path, EvaluateConfig, overrides)


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    return load_job_config(path, TrainConfig, overrides)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: nested mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``--set`` overrides (``splits.n_folds=2``, ``model.preset=base``, ``horizons=[1, 5]``)
    as a nested mapping: the dotted key names the section path, the value is read as YAML
    (numbers, booleans, null, lists). The merged config is validated like the YAML, so an
    unknown key or a wrong value is an error naming the dotted key."""
    merged: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key, e.g. --set splits.n_folds=2")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({err})") from None
        for part in reversed(parts):
            value = {part.strip(): value}
        merged = deep_merge(merged, value)
    return merged


def dump_config(config: BaseModel) -> dict[str, Any]:
    """JSON-safe dict of a config (for metadata files)."""
    return config.model_dump(mode="json")


# --------------------------------------------------------------------------------------
# Stage-1 pretraining (`kizashi pretrain`)
# --------------------------------------------------------------------------------------


class SyntheticBarsSettings(StrictModel):
    """The synthetic intraday market used when ``data.paths`` is empty
    (:class:`kizashi.data.synthetic.intraday.SyntheticBarsConfig`)."""

    symbols: list[str] = Field(default_factory=lambda: ["SYN_A", "SYN_B", "SYN_C", "SYN_D"])
    timeframe: str = "m5"
    n_days: int = Field(60, ge=2)
    seed: int = 0
    session: Literal["24h", "equity"] = "24h"


class BarsInputSettings(StrictModel):
    paths: list[Path] = Field(default_factory=list, description="bar files (CSV or Parquet); empty = synthetic")
    duplicates: Literal["error", "first", "last"] = Field("error", description="duplicated timestamps: an error, or keep one row")
    synthetic: SyntheticBarsSettings = Field(default_factory=SyntheticBarsSettings)


class MaskSettings(StrictModel):
    ratio: float = Field(0.15, ge=0, lt=1)
    min_span: int = Field(3, ge=1)
    max_span: int = Field(10, ge=1)
    synchronized: bool = Field(False, description="mask the same wall-clock intervals in every timeframe")


class WindowSettings(StrictModel):
    """``mode: aligned``: every timeframe's last ``seq_len`` bars closed by one anchor instant,
    anchors every ``anchor_stride`` base bars. ``mode: async``: each timeframe's own windows
    (length ``seq_lens[tf]``, every ``strides[tf]`` bars of that timeframe; missing entries
    default to ``seq_len`` / ``anchor_stride``), not aligned in time, so no consistency loss
    and the model must use ``fusion: separate``."""

    mode: Literal["aligned", "async"] = "aligned"
    seq_len: int = Field(64, ge=2, description="bars per timeframe window (T)")
    seq_lens: dict[str, int] | None = Field(None, description="async: bars per window, per timeframe")
    strides: dict[str, int] | None = Field(None, description="async: training windows every n bars, per timeframe")
    anchor_stride: int = Field(1, ge=1, description="training windows every n base bars")
    val_anchor_stride: int = Field(4, ge=1, description="validation windows every n bars (per timeframe in async)")
    mask: MaskSettings = Field(default_factory=MaskSettings)
    stats_windows: int = Field(2000, ge=10, description="training windows sampled for the statistics")

    @model_validator(mode="after")
    def _check_mode(self) -> WindowSettings:
        if self.mode == "aligned" and (self.seq_lens or self.strides):
            raise ValueError("seq_lens and strides are for mode: async (aligned windows share seq_len and anchor_stride)")
        if self.mode == "async" and self.mask.synchronized:
            raise ValueError("mask.synchronized needs mode: aligned (async windows do not share wall-clock time)")
        for name in ("seq_lens", "strides"):
            bad = {tf: n for tf, n in (getattr(self, name) or {}).items() if n < 1}
            if bad:
                raise ValueError(f"{name}: values must be >= 1, got {bad}")
        return self


class Stage1LabelSettings(StrictModel):
    """The fine-tuning label (``kizashi.datasets.multi_timeframe.LabelConfig``): the log
    return from the anchor close to the base close ``bars`` bars of ``timeframe`` later
    (null = the coarsest timeframe), so it depends only on bars closing after the anchor."""

    timeframe: str | None = Field(None, pattern=r"^[mhd][1-9][0-9]*$",
                                  description="horizon unit (m15, h1, h4, d1, ...); null = the coarsest timeframe")
    bars: int = Field(1, ge=1, description="horizon in bars of `timeframe`, measured from the anchor")


class TransferLearningSettings(StrictModel):
    """The seed configs' keys; ``use_pretrained_lm: false`` = the random-init Transformer."""

    use_pretrained_lm: bool = False
    lm_name_or_path: str = "bundled:all-minilm-l6-v2"
    freeze_lm_epochs: int = Field(0, ge=0)
    patch_len: int = Field(16, ge=1)
    lm_learning_rate_factor: float = Field(0.1, gt=0)
    lm_layers: int | None = Field(None, ge=1, description="keep the first K encoder blocks; null = all")
    lm_weights: Literal["pretrained", "random"] = Field(
        "pretrained", description="random = the LM's architecture, randomly initialized (a control)"
    )
    unfreeze_blocks_per_epoch: int | None = Field(None, ge=1, description="null = unfreeze all at once")


class PretrainLossSettings(StrictModel):
    kind: Literal["huber", "mse"] = "huber"
    huber_delta: float = Field(1.0, gt=0)
    consistency_weight: float = Field(0.1, ge=0)


class LightningRunSettings(StrictModel):
    """What every Lightning job's ``trainer`` section shares (pretraining, LM training)."""

    max_epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = Field("auto", description="auto = bf16-mixed on CUDA, 32-true on CPU")
    num_workers: int = Field(0, ge=0)
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None


class PretrainTrainerSettings(LightningRunSettings):
    one_cycle: bool = Field(True, description="one-cycle learning rate (10% warm-up, cosine decay)")


class PretrainConfig(StrictModel):
    """`kizashi pretrain`: Stage-1 masked multi-timeframe reconstruction."""

    data: BarsInputSettings = Field(default_factory=BarsInputSettings)
    timeframes: list[str] | None = Field(None, description="null = the base timeframe and every default coarser one")
    train_end: str | None = Field(None, description="ISO time: windows ending before it train; null = the first 80%")
    val_end: str | None = Field(None, description="ISO time: validation windows end before it; null = to the end")
    windows: WindowSettings = Field(default_factory=WindowSettings)
    label: Stage1LabelSettings = Field(default_factory=Stage1LabelSettings)
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="stage1", preset="small"))
    transfer_learning: TransferLearningSettings = Field(default_factory=TransferLearningSettings)
    loss: PretrainLossSettings = Field(default_factory=PretrainLossSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    trainer: PretrainTrainerSettings = Field(default_factory=PretrainTrainerSettings)
    seed: int = 0
    output: RunOutputConfig = Field(default_factory=lambda: RunOutputConfig(dir=Path("artifacts/pretrain/stage1")))


def load_pretrain_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    return load_job_config(path, PretrainConfig, overrides)


# --------------------------------------------------------------------------------------
# Experiments (`kizashi experiment`): one pretraining config under named settings
# --------------------------------------------------------------------------------------

#: Sections every setting of an experiment must leave equal, so the settings compare on
#: the same seed, data, split and windows.
EXPERIMENT_SHARED_SECTIONS = ("data", "timeframes", "train_end", "val_end", "windows", "label", "seed")


class ExperimentReportSettings(StrictModel):
    epochs: list[int] = Field(default_factory=lambda: [1, 3, 5], description="epochs tabulated (and the last)")
    reference: str | None = Field(None, description="the setting the others are compared with; null = the first")


class ExperimentConfig(StrictModel):
    """`kizashi experiment`: a pretraining config (``base`` file, then ``overrides``) run
    once per entry of ``settings`` (each a mapping of overrides merged over it), with a
    comparison report. The settings may not change :data:`EXPERIMENT_SHARED_SECTIONS`."""

    kind: Literal["pretrain"] = "pretrain"
    base: Path | None = Field(None, description="a `kizashi pretrain` YAML; null = its defaults")
    overrides: dict[str, Any] = Field(default_factory=dict, description="merged over base, for every setting")
    settings: dict[str, dict[str, Any]] = Field(..., min_length=2)
    report: ExperimentReportSettings = Field(default_factory=ExperimentReportSettings)
    output: RunOutputConfig = Field(default_factory=lambda: RunOutputConfig(dir=Path("artifacts/experiments/run")))

    @model_validator(mode="after")
    def _check_names(self) -> ExperimentConfig:
        for name in self.settings:
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"settings: {name!r} is not a usable directory name (letters, digits, - _ .)")
        if self.report.reference is not None and self.report.reference not in self.settings:
            raise ValueError(f"report.reference={self.report.reference!r} is not one of the settings {list(self.settings)}")
        return self

    def setting_configs(self, source: str = "<experiment>") -> dict[str, PretrainConfig]:
        """``{name: PretrainConfig}``, each validated; a :class:`ConfigError` names the
        setting, and one is raised if the settings differ in a shared section."""
        base = read_config_file(self.base, PretrainConfig) if self.base is not None else {}
        base = deep_merge(base, self.overrides)
        configs = {name: config_from_dict(PretrainConfig, deep_merge(base, extra), source=f"{source}: settings.{name}")
                   for name, extra in self.settings.items()}
        first_name, first = next(iter(configs.items()))
        for name, config in configs.items():
            for section in EXPERIMENT_SHARED_SECTIONS:
                if getattr(config, section) != getattr(first, section):
                    raise ConfigError(
                        f"{source}: settings.{name} changes {section!r} (unlike {first_name}): the settings of an "
                        f"experiment must share {', '.join(EXPERIMENT_SHARED_SECTIONS)} so they compare on the "
                        "same seed and data"
                    )
        return configs


def load_experiment_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The experiment file; ``base`` and the input paths in its ``overrides`` and ``settings``
    (pretraining keys) are relative to it, those in ``overrides`` to the working directory."""
    data = _anchor_experiment(read_config_file(path, ExperimentConfig), Path(path).expanduser().parent)
    if overrides:
        data = deep_merge(data, _anchor_experiment(anchor_paths(overrides, ExperimentConfig, Path.cwd()), Path.cwd()))
    return config_from_dict(ExperimentConfig, data, source=str(path), overrides=overrides)


def _anchor_experiment(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The pretraining keys in an experiment's ``overrides`` and ``settings`` anchored at ``folder``."""
    data = dict(data)
    if isinstance(data.get("overrides"), dict):
        data["overrides"] = anchor_paths(data["overrides"], PretrainConfig, folder)
    if isinstance(data.get("settings"), dict):
        data["settings"] = {
            name: anchor_paths(extra, PretrainConfig, folder) if isinstance(extra, dict) else extra
            for name, extra in data["settings"].items()
        }
    return data


# --------------------------------------------------------------------------------------
# Token language models (`kizashi lm train`)
# --------------------------------------------------------------------------------------


class TextDataSettings(StrictModel):
    text: Path | None = Field(None, description="a UTF-8 text file (or --text)")
    tokenizer: Literal["char", "byte"] = Field("char", description="char: the text's alphabet; byte: UTF-8 bytes")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="the last part of the text validates")


class LMTrainerSettings(LightningRunSettings):
    max_epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (and decay the lr to it)")
    max_minutes: float | None = Field(
        None, gt=0,
        description="wall-clock budget of the whole job, final validation included (validation subsampled to fit)",
    )
    val_budget_share: float = Field(
        0.1, gt=0, lt=1,
        description="with max_minutes: the share of the budget one validation may take (else evenly spread windows)",
    )
    val_check_interval: float | int = Field(1.0, description="a fraction of an epoch, or a number of batches")
    nan_guard_limit: int = Field(20, ge=1)


class LMTrainConfig(StrictModel):
    """`kizashi lm train`: a token language model (``bk_phase1``, ``bk_phase2``, ...) on a text."""

    data: TextDataSettings = Field(default_factory=TextDataSettings)
    seq_len: int = Field(256, ge=2, description="tokens per training window")
    train_stride: int | None = Field(None, ge=1, description="training windows every n tokens; null = seq_len / 2")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="bk_phase2", preset="small"))
    optimizer: OptimizerSettings = Field(default_factory=lambda: OptimizerSettings(lr=1e-3, weight_decay=0.01,
                                                                                  warmup_steps=100))
    trainer: LMTrainerSettings = Field(default_factory=LMTrainerSettings)
    seed: int = 0
    output: RunOutputConfig = Field(default_factory=lambda: RunOutputConfig(dir=Path("artifacts/lm_runs/run")))


def load_lm_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> LMTrainConfig:
    return load_job_config(path, LMTrainConfig, overrides)
