"""The list of feature families, and resolution of a config into concrete feature specs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kizashi.errors import ConfigError
from kizashi.features.alpha158 import alpha158_family
from kizashi.features.calendar import calendar_family
from kizashi.features.cross_section import cross_section_family
from kizashi.features.distribution import distribution_family
from kizashi.features.interactions import interactions_family
from kizashi.features.margin import margin_family
from kizashi.features.market import market_family
from kizashi.features.maturity import maturity_family
from kizashi.features.peers import peers_family
from kizashi.features.range_gap import range_gap_family
from kizashi.features.returns import returns_family
from kizashi.features.sector import sector_family, sector_onehot_family
from kizashi.features.spec import FeatureContext, FeatureSpec
from kizashi.features.technical import technical_family
from kizashi.features.volatility import volatility_family
from kizashi.features.volume import volume_family


@dataclass(frozen=True)
class Family:
    """A feature family. ``default``: built by ``families: all``; an optional family
    (``default=False``) is built only when ``features.families`` lists it by name."""

    name: str
    build: Callable[[FeatureContext], list[FeatureSpec]]
    description: str
    default: bool = True


FAMILIES: tuple[Family, ...] = (
    Family("returns", returns_family, "simple/log returns 1-120d, skip-momentum"),
    Family("volatility", volatility_family, "realized, Parkinson, Garman-Klass, Rogers-Satchell, semi-vol"),
    Family("range_gap", range_gap_family, "ranges, gaps, shadows, close location"),
    Family("volume", volume_family, "volume/turnover ratios, z-scores, Amihud, flows"),
    Family("technical", technical_family, "RSI, MACD, Bollinger, ATR, stochastics, MA gaps"),
    Family("market", market_family, "equal-weight market; beta, alpha, idio vol, excess return"),
    Family("sector", sector_family, "sector returns/vol, stock minus sector, within-sector rank"),
    Family("sector_onehot", sector_onehot_family, "one column per sector"),
    Family("distribution", distribution_family, "skew, kurtosis, drawdown, extremes"),
    Family("maturity", maturity_family, "enough-history flags per window"),
    Family("calendar", calendar_family, "weekday, month, period ends, gaps, regimes"),
    Family("margin", margin_family, "weekly margin balances as of publication"),
    Family("peers", peers_family, "correlation-graph neighbours: peer returns, residual vs peers"),
    Family("cross_section", cross_section_family, "per-day ranks and z-scores"),
    Family("interactions", interactions_family, "products/ratios of features"),
    Family("alpha158", alpha158_family, "Qlib's Alpha158 factors, value for value (optional)", default=False),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES if f.default)  # what `families: all` builds
OPTIONAL_FAMILY_NAMES = tuple(f.name for f in FAMILIES if not f.default)  # built only when listed
KNOWN_FAMILY_NAMES = FAMILY_NAMES + OPTIONAL_FAMILY_NAMES
ALL = "all"
ROW_ORDER_OPS = (".shift(", ".rolling", ".cum_", ".diff(", ".ewm_")


def select_families(families: Sequence[str] | str = ALL, exclude: Sequence[str] = ()) -> list[Family]:
    """The families to build, in registry order. ``"all"`` (alone, or as an entry of a list)
    stands for every default family (:data:`FAMILY_NAMES`); optional families
    (:data:`OPTIONAL_FAMILY_NAMES`) are built only when named: ``["all", "alpha158"]``."""
    requested = [families] if isinstance(families, str) else list(families)
    names = {n for item in requested for n in (FAMILY_NAMES if item == ALL else (item,))}
    unknown = sorted(names - set(KNOWN_FAMILY_NAMES)) + sorted(set(exclude) - set(KNOWN_FAMILY_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown feature families {unknown}; known: {list(FAMILY_NAMES)} (built by 'all') and "
            f"{list(OPTIONAL_FAMILY_NAMES)} (optional: built only when listed, e.g. families: [all, alpha158])"
        )
    return [f for f in FAMILIES if f.name in names and f.name not in exclude]


def resolve_specs(
    ctx: FeatureContext, families: Sequence[str] | str = ALL, exclude: Sequence[str] = ()
) -> list[FeatureSpec]:
    """All specs of the chosen families, in family order, checked for consistency.

    A stage-2 spec's lookback becomes the largest lookback among the stage-1 columns it
    reads. Raises ConfigError on duplicate names or on a stage-2 feature whose inputs come
    from a family that is not selected.
    """
    specs = [spec for family in select_families(families, exclude) for spec in family.build(ctx)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"duplicate feature names: {duplicates}")
    for spec in specs:
        # Unmasked stage-1 features are evaluated over the whole (date, code)-sorted frame,
        # not per stock: they must be row-local (joined tables, calendar, flags).
        text = str(spec.expr)
        if spec.stage == 1 and not spec.masked and any(op in text for op in ROW_ORDER_OPS):
            raise ConfigError(f"feature `{spec.name}` uses a row-order operation but is not masked/per-stock")
    stage1 = {s.name: s for s in specs if s.stage == 1}
    resolved = []
    for spec in specs:
        if spec.stage == 2:
            inputs = [n for n in spec.expr.meta.root_names() if not n.startswith("_") and n not in ("date", "sector", "code")]
            missing = [n for n in inputs if n not in stage1]
            if missing:
                raise ConfigError(
                    f"feature `{spec.name}` (family {spec.family}) reads {missing}, which no selected family builds;"
                    " select their families or exclude this one"
                )
            spec = replace(spec, lookback=max([spec.lookback, *(stage1[n].lookback for n in inputs)]))
        resolved.append(spec)
    return resolved


def max_lookback(specs: Sequence[FeatureSpec]) -> int:
    return max((s.lookback for s in specs), default=0)
