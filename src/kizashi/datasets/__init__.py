"""Torch datasets over built datasets: the day-panel cache (``day_panel_cache``), one-trading-day
panels (``day_panel``), their features held on the training device (``device_panel``) and
fold-fitted statistics behind one protocol (``statistics``)."""

from kizashi.datasets.day_panel import (
    DayPanelDataset,
    FoldDays,
    collate_days,
    day_loader,
    fold_day_indices,
)
from kizashi.datasets.day_panel_cache import DayPanelCache, build_day_panel_cache
from kizashi.datasets.device_panel import DeviceFeaturePanel, panel_bytes
from kizashi.datasets.statistics import (
    FeatureStats,
    FittedStatistics,
    TimeframeStats,
    WindowStats,
    fit_feature_stats,
)

__all__ = [
    "DayPanelCache",
    "DayPanelDataset",
    "DeviceFeaturePanel",
    "FeatureStats",
    "FittedStatistics",
    "FoldDays",
    "TimeframeStats",
    "WindowStats",
    "build_day_panel_cache",
    "collate_days",
    "day_loader",
    "fit_feature_stats",
    "fold_day_indices",
    "panel_bytes",
]
