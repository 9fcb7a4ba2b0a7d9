"""Models and their registry. Importing this package registers every built-in model.

    from kizashi.models import create_model, list_models, model_presets
    model = create_model("atft_gat_fan", preset="small", n_features=400)

Every registered model (and the Stage-1 forecaster) saves and loads in the Hugging Face
convention (:mod:`kizashi.models.pretrained`)::

    model.save_pretrained("DIR")                # DIR/config.json + DIR/model.safetensors
    model = ATFTGATFAN.from_pretrained("DIR")   # or load_pretrained_model("DIR"): any model
"""

from kizashi.models.registry import (
    ModelEntry,
    config_fields,
    create_model,
    list_models,
    model_config,
    model_presets,
    parameter_count,
    register_model,
)
from kizashi.models.pretrained import (
    PretrainedLoadError,
    PretrainedMixin,
    load_pretrained_model,
    read_pretrained_config,
)

# Built-in models register themselves on import (keep this list in sync with models/).
from kizashi.models.atft_gat_fan import ATFTGATFAN, ATFTGATFANConfig  # noqa: E402
from kizashi.models.stage1 import Stage1Config, Stage1Forecaster, Stage1Model  # noqa: E402
from kizashi.models.bk.phase1 import BKPhase1LM  # noqa: E402
from kizashi.models.bk.phase2 import BKPhase2LM  # noqa: E402
from kizashi.models.transformer_lm import TransformerLM, TransformerLMConfig  # noqa: E402

__all__ = [
    "ATFTGATFAN",
    "ATFTGATFANConfig",
    "BKPhase1LM",
    "BKPhase2LM",
    "ModelEntry",
    "PretrainedLoadError",
    "PretrainedMixin",
    "config_fields",
    "create_model",
    "list_models",
    "load_pretrained_model",
    "model_config",
    "model_presets",
    "parameter_count",
    "read_pretrained_config",
    "register_model",
    "Stage1Config",
    "Stage1Forecaster",
    "Stage1Model",
    "TransformerLM",
    "TransformerLMConfig",
]
