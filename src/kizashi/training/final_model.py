"""A final model: refitted on every labelled day, saved as a self-describing folder that
``kizashi predict`` scores new days with. Two kinds: ``lightgbm`` (one booster per horizon,
reading one day's feature rows) and ``atft_gat_fan`` (one network for every horizon, reading
a window of days and the day's correlation graph).

Folder layout::

    final_model.json          what the model is and what it was trained on (FinalModel fields)
    lightgbm_{h}d.txt         lightgbm: one booster per horizon (its own text format)
    model/                    atft_gat_fan: the network's pretrained folder (config.json +
                              model.safetensors; kizashi.models.load_pretrained_model)
    feature_stats.json        atft_gat_fan: the normalization statistics fitted on the
                              training days (kizashi.datasets.FeatureStats)
    monitor_reference_{h}d.json   what `kizashi monitor` compares new days with (kizashi.monitoring)

``final_model.json`` holds the model kind, the horizons, the feature columns in the order the
model reads them, the boosting rounds per horizon (lightgbm; empty for atft_gat_fan), the
label (the training target: ``rank`` or ``return``), the data config the features are built
with (``DataBuildConfig`` as JSON), the input hashes and dates of the training data, the
median number of stocks per training day (a bound for the universe a prediction day may
have), the run directory the rounds or epochs came from, and the kizashi version. An
atft_gat_fan manifest adds ``window`` (L, days per input window), ``epochs`` (of the final
fit), ``train_days`` / ``labelled_last`` (the days trained on: every day whose targets are
known, the last of them) and ``train_config`` (the run's ``TrainConfig`` as JSON); a lightgbm
manifest has none of these keys.

Scoring: :meth:`FinalModel.predict` (lightgbm, ``x`` [N, F]) and
:meth:`FinalModel.score_days` (atft_gat_fan, days of a DayPanelCache or of a
:class:`~kizashi.training.window_panel.WindowPanel`: the same windows either way).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi import __version__
from kizashi.atomic import atomic_path
from kizashi.config import DataBuildConfig, config_from_dict
from kizashi.errors import KizashiError
from kizashi.training.lightgbm_baseline import import_lightgbm

MANIFEST = "final_model.json"
NETWORK_DIR = "model"
STATS_FILE = "feature_stats.json"
LIGHTGBM = "lightgbm"
ATFT = "atft_gat_fan"
KINDS = (LIGHTGBM, ATFT)
# manifest keys of a neural final model only (a LightGBM manifest has none of them)
NEURAL_FIELDS = ("window", "epochs", "train_days", "labelled_last", "train_config")
# what is loaded from the folder's other files, never written to the manifest
LOADED_FIELDS = ("boosters", "network", "feature_stats")


def booster_file(horizon: int) -> str:
    return f"lightgbm_{horizon}d.txt"


@dataclass
class DayScores:
    """Scores of some days' stocks: ``keys`` (``date, code``, sorted by date then code),
    ``scores`` {h: [N] float64} aligned with ``keys``, and with ``feature_weight`` asked for,
    the model's mean variable-selection weight per feature [F] (``None`` otherwise)."""

    keys: pl.DataFrame
    scores: dict[int, np.ndarray]
    feature_weight: np.ndarray | None = None


@dataclass
class FinalModel:
    """A refitted model and its description (module docstring). LightGBM: ``boosters``
    [horizon -> lightgbm.Booster] read a [N, F] float32 matrix of ``features`` in this order.
    ATFT-GAT-FAN: ``network`` reads day batches of [N, L, F] windows of ``features``
    standardized with ``feature_stats`` and the day's graph, and outputs [N, H] points."""

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
    window: int | None = None
    epochs: int | None = None
    train_days: int | None = None
    labelled_last: str | None = None
    train_config: dict[str, Any] | None = None
    boosters: dict[int, Any] = field(default_factory=dict, repr=False)
    network: Any = field(default=None, repr=False)
    feature_stats: Any = field(default=None, repr=False)

    def predict(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """LightGBM scores per horizon: ``x`` [N, F] (columns = ``features``) -> {h: [N] float64}."""
        if self.kind != LIGHTGBM:
            raise KizashiError(f"a {self.kind} final model scores windows of days (score_days), not rows")
        return {h: np.asarray(self.boosters[h].predict(x), dtype=np.float64) for h in self.horizons}

    def device(self) -> Any:
        """The torch device the network's weights are on (ATFT-GAT-FAN; None for LightGBM)."""
        if self.network is None:
            return None
        return next(self.network.parameters()).device

    def days_per_batch(self) -> int:
        """Days per scoring batch: the run's ``trainer.days_per_batch``."""
        return int(((self.train_config or {}).get("trainer") or {}).get("days_per_batch", 4))

    def score_days(
        self, panel: Any, day_indices: Any, device: Any = None, *, feature_weights: bool = False,
        days_per_batch: int | None = None,
    ) -> DayScores:
        """ATFT-GAT-FAN scores of the stocks alive on the days ``day_indices`` [K] of
        ``panel`` (a DayPanelCache or a WindowPanel whose features are ``features``): each
        day's [N_d, L, F] window standardized with ``feature_stats`` and its graph, as
        :class:`~kizashi.datasets.DayPanelDataset` assembles them, in batches of
        ``days_per_batch`` days (default :meth:`days_per_batch`) through the network in
        float32 on ``device`` (default: CUDA when available, else the CPU)."""
        from kizashi.datasets import DayPanelDataset, collate_days
        from kizashi.training.neural_fit import predict_points

        if self.kind != ATFT:
            raise KizashiError(f"score_days: a {self.kind} final model scores feature rows (predict)")
        if list(panel.feature_columns) != list(self.features):
            raise KizashiError("score_days: the panel's feature columns differ from the model's")
        dataset = DayPanelDataset(panel, day_indices, window=int(self.window), stats=self.feature_stats)
        step = days_per_batch or self.days_per_batch()
        batches = (collate_days(dataset.__getitems__(list(range(i, min(i + step, len(dataset))))))
                   for i in range(0, len(dataset), step))
        out = predict_points(self.network, batches, device, feature_weights=feature_weights)
        keys = pl.DataFrame({
            "date": pl.Series("date", np.asarray(panel.dates)[out["day"]]).cast(pl.Date),
            "code": pl.Series("code", np.asarray(panel.codes, dtype=object)[out["code"]], dtype=pl.Utf8),
        })
        scores = {h: out["point"][:, j].astype(np.float64) for j, h in enumerate(self.horizons)}
        return DayScores(keys, scores, out.get("feature_weight"))

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
        skipped = set(LOADED_FIELDS) | (set(NEURAL_FIELDS) if self.kind == LIGHTGBM else set())
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skipped}
        data["rounds"] = {str(h): n for h, n in self.rounds.items()}
        return json.loads(json.dumps(data, default=str))


def save_final_model(model: FinalModel, out: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` to the folder ``out`` atomically (the old folder stays until the new
    one is complete), with ``extra_files`` ({file name: text}, e.g. monitoring references)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        if model.kind == LIGHTGBM:
            for horizon in model.horizons:
                model.boosters[horizon].save_model(str(tmp / booster_file(horizon)))
        else:
            model.feature_stats.save(tmp / STATS_FILE)
            model.network.save_pretrained(tmp / NETWORK_DIR, metadata={
                "final": True, "epochs": model.epochs, "horizons": list(model.horizons),
                "features": list(model.features), "target": model.label, "feature_stats": f"../{STATS_FILE}",
            })
        (tmp / MANIFEST).write_text(json.dumps(model.manifest(), indent=1, default=str), encoding="utf-8")
    return out


def load_final_model(folder: str | Path, map_location: Any = None) -> FinalModel:
    """The model saved in ``folder``; an ATFT-GAT-FAN network's weights on ``map_location``
    ("cpu", "cuda", ...; None or "auto": CUDA when available, else the CPU), in eval mode.
    Errors name the missing or unreadable file."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise KizashiError(f"{manifest}: missing (not a `kizashi fit-final` output folder?)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KizashiError(f"{manifest}: not valid JSON ({err})") from None
    if data.get("kind") not in KINDS:
        raise KizashiError(
            f"{manifest}: model kind {data.get('kind')!r} is not one this version can load ({', '.join(KINDS)})"
        )
    data["rounds"] = {int(h): int(n) for h, n in data["rounds"].items()}
    known = {k: v for k, v in data.items() if k in FinalModel.__dataclass_fields__ and k not in LOADED_FIELDS}
    model = FinalModel(**known)
    if model.kind == ATFT:
        return _load_network(model, folder, map_location)
    lgb = import_lightgbm()
    for horizon in model.horizons:
        path = folder / booster_file(horizon)
        if not path.is_file():
            raise KizashiError(f"{path}: missing (the {horizon}d booster of {folder})")
        model.boosters[horizon] = lgb.Booster(model_file=str(path))
    return model


def _load_network(model: FinalModel, folder: Path, map_location: Any) -> FinalModel:
    from kizashi.datasets import FeatureStats
    from kizashi.models import load_pretrained_model
    from kizashi.training.neural_fit import inference_device

    if model.window is None:
        raise KizashiError(f"{folder / MANIFEST}: an {ATFT} manifest without its window")
    stats_path = folder / STATS_FILE
    if not stats_path.is_file():
        raise KizashiError(f"{stats_path}: missing (the feature statistics of {folder})")
    model.feature_stats = FeatureStats.load(stats_path)
    if list(model.feature_stats.feature_columns) != list(model.features):
        raise KizashiError(f"{stats_path}: its feature columns differ from the features of {folder / MANIFEST}")
    model.network = load_pretrained_model(folder / NETWORK_DIR, map_location=inference_device(map_location))
    config = model.network.config
    if tuple(config.horizons) != tuple(model.horizons) or config.window != model.window or config.n_features != len(
        model.features
    ):
        raise KizashiError(f"{folder / NETWORK_DIR}: the network's horizons, window or feature count differ from "
                           f"{folder / MANIFEST}")
    return model


def folder_digest(folder: str | Path) -> str:
    """sha256 over the folder's files (names and contents, sorted): the model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
