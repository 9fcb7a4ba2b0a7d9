"""The registry's parameter count (``kizashi models list``) is the built model's, counted on
the meta device without allocating."""

from __future__ import annotations

import pytest

from kizashi.models import config_fields, create_model, list_models, model_presets, parameter_count


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_equals_the_built_models(name):
    overrides = {"n_features": 37} if "n_features" in config_fields(name) else {}
    preset = next(iter(model_presets(name)))  # the first (smallest) preset, built for real
    built = create_model(name, preset=preset, **overrides)
    assert parameter_count(name, preset=preset, **overrides) == sum(p.numel() for p in built.parameters())
    assert all(p.device.type == "cpu" for p in built.parameters()), "create_model still builds on the CPU"
