"""Torch datasets over built datasets: one-trading-day panels (``day_panel``) and their
features held on the training device (``device_panel``)."""

from kizashi.datasets.day_panel import (
    DayPanelCache,
    DayPanelDataset,
    FeatureStats,
    FoldDays,
    build_day_panel_cache,
    collate_days,
    day_loader,
    fit_feature_stats,
    fold_day_indices,
)
from kizashi.datasets.device_panel import DeviceFeaturePanel, panel_bytes

__all__ = [
    "DayPanelCache",
    "DayPanelDataset",
    "DeviceFeaturePanel",
    "FeatureStats",
    "FoldDays",
    "build_day_panel_cache",
    "collate_days",
    "day_loader",
    "fit_feature_stats",
    "fold_day_indices",
    "panel_bytes",
]
