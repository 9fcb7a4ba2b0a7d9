"""Leak-safe features as Polars expressions grouped in families, targets, normalization.

A family is a function ``(FeatureContext) -> list[FeatureSpec]``; the registry
(:mod:`kizashi.features.registry`) lists them and :mod:`kizashi.features.pipeline`
evaluates them over a whole panel.
"""

from kizashi.features.spec import FeatureContext, FeatureSpec

__all__ = ["FeatureContext", "FeatureSpec"]
