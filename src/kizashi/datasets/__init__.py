"""Torch datasets over built datasets: one-trading-day panels (``day_panel``)."""

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

__all__ = [
    "DayPanelCache",
    "DayPanelDataset",
    "FeatureStats",
    "FoldDays",
    "build_day_panel_cache",
    "collate_days",
    "day_loader",
    "fit_feature_stats",
    "fold_day_indices",
]
