"""A final model: refitted on every labelled day, saved as a self-describing folder that
``kizashi predict`` scores new days with.

Folder layout::

    final_model.json          what the model is and what it was trained on (FinalModel fields)
    lightgbm_{h}d.txt         one LightGBM booster per horizon (its own text format)
    monitor_reference_{h}d.json   what `kizashi monitor` compares new days with (kizashi.monitoring)

``final_model.json`` holds the model kind, the horizons, the feature columns in the order the
boosters read them, the boosting rounds per horizon, the label, the data config the features
are built with (``DataBuildConfig`` as JSON), the input hashes and dates of the training
data, the median number of stocks per training day (a bound for the universe a prediction
day may have), the run directory the rounds came from, and the kizashi version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kizashi import __version__
from kizashi.atomic import atomic_path
from kizashi.config import DataBuildConfig, config_from_dict
from kizashi.errors import KizashiError
from kizashi.training.lightgbm_baseline import import_lightgbm

MANIFEST = "final_model.json"


def booster_file(horizon: int) -> str:
    return f"lightgbm_{horizon}d.txt"


@dataclass
class FinalModel:
    """A refitted model and its description (module docstring). ``boosters`` [horizon ->
    lightgbm.Booster] reads a [N, F] float32 matrix of ``features`` in this order."""

    kind: str
    horizons: list[int]
    features: list[str]
    rounds: dict[int, int]
    label: str
    data_config: dict[str, Any]
    input_hashes: dict[str, str]
    train_first: str
    train_last: str
    train_rows: int
    universe_median: int
    run_dir: str
    kizashi_version: str = __version__
    boosters: dict[int, Any] = field(default_factory=dict, repr=False)

    def predict(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """Scores per horizon: ``x`` [N, F] (columns = ``features``) -> {h: [N] float64}."""
        return {h: np.asarray(self.boosters[h].predict(x), dtype=np.float64) for h in self.horizons}

    def data_build_config(
        self, data: str | Path | None = None, sectors: str | Path | None = None, *, source: str = MANIFEST
    ) -> DataBuildConfig:
        """The data config the model's features are built with, reading ``data`` / ``sectors``
        (relative to the working directory) instead of the training files when given."""
        raw = dict(self.data_config)
        raw["input"] = dict(raw.get("input") or {})
        if data is not None:
            raw["input"]["path"] = str(Path(data).expanduser().absolute())
        if sectors is not None:
            raw["input"]["sectors"] = str(Path(sectors).expanduser().absolute())
        return config_from_dict(DataBuildConfig, raw, source=source)

    def manifest(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("boosters")
        data["rounds"] = {str(h): n for h, n in self.rounds.items()}
        return data


def save_final_model(model: FinalModel, out: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` to the folder ``out`` atomically (the old folder stays until the new
    one is complete), with ``extra_files`` ({file name: text}, e.g. monitoring references)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        for horizon in model.horizons:
            model.boosters[horizon].save_model(str(tmp / booster_file(horizon)))
        (tmp / MANIFEST).write_text(json.dumps(model.manifest(), indent=1, default=str), encoding="utf-8")
    return out


def load_final_model(folder: str | Path) -> FinalModel:
    """The model saved in ``folder``; errors name the missing or unreadable file."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise KizashiError(f"{manifest}: missing (not a `kizashi fit-final` output folder?)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KizashiError(f"{manifest}: not valid JSON ({err})") from None
    if data.get("kind") != "lightgbm":
        raise KizashiError(f"{manifest}: model kind {data.get('kind')!r} is not one this version can load (lightgbm)")
    data["rounds"] = {int(h): int(n) for h, n in data["rounds"].items()}
    known = {k: v for k, v in data.items() if k in FinalModel.__dataclass_fields__}
    model = FinalModel(**known)
    lgb = import_lightgbm()
    for horizon in model.horizons:
        path = folder / booster_file(horizon)
        if not path.is_file():
            raise KizashiError(f"{path}: missing (the {horizon}d booster of {folder})")
        model.boosters[horizon] = lgb.Booster(model_file=str(path))
    return model


def folder_digest(folder: str | Path) -> str:
    """sha256 over the folder's files (names and contents, sorted): the model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
