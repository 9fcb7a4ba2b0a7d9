"""The ``kizashi`` command line (typer). Every command has ``--help``.

    kizashi data build   [--config FILE] [--data FILE] [--sectors FILE] [--out DIR]
    kizashi data columns [DATASET] [--config FILE] [--dataset DIR] [--family NAME] [--json]
    kizashi data check   FILE [--preset NAME] [--sectors FILE] [--margin FILE]
    kizashi evaluate     [--config FILE] [--data FILE [--sectors FILE]] [--control] [--out DIR] [--resume]
    kizashi train        [--config FILE] [--data FILE [--sectors FILE]] [--resume] [--out DIR] [--devices N]
    kizashi pretrain     [--config FILE] [--out DIR] [--devices N] [--json]
    kizashi finetune     [--config FILE] [--encoder FILE] [--epochs N] [--freeze-encoder]
    kizashi experiment   CONFIG [--out DIR] [--only NAME,...] [--force] [--json]
    kizashi lm train     [--config FILE] [--text FILE] [--out DIR] [--resume] [--max-minutes M] [--devices N] [--json]
    kizashi lm sample    RUN_DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K] [--seed S]
    kizashi report       RUN_DIR [--out DIR]
    kizashi runs compare RUN_DIR RUN_DIR... [--html FILE] [--json]
    kizashi ensemble     RUN_DIR RUN_DIR... --out DIR [--weights W,W...]
    kizashi strategies   RUN_DIR [--horizon H] [--set portfolio.KEY=VALUE]
    kizashi export alphalens RUN_DIR [--out DIR] [--horizon H]
    kizashi fit-final    --run RUN_DIR [--out DIR]
    kizashi predict      --model DIR [--data FILE] [--sectors FILE] [--date D] [--out DIR] [--device DEV]
    kizashi monitor      --model DIR --since D [--until D] [--data FILE] [--horizon H] [--out DIR]
    kizashi models list  [--n-features N]
    kizashi demo         [--data FILE --sectors FILE] [--out DIR] [--resume]
    kizashi --version
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kizashi import __version__
from kizashi.config import DataBuildConfig, load_config
from kizashi.errors import ConfigError, KizashiError
from kizashi.log import route_library_logs, setup_logging

app = typer.Typer(help="kizashi: deep learning on market time series.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Raw data: build datasets, list feature columns, check input files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
lm_app = typer.Typer(help="Token language models (BK-Core Phase 1 / Phase 2) on a text.", no_args_is_help=True)
app.add_typer(lm_app, name="lm")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config (configs/data/*.yaml).", exists=False)
SetOption = typer.Option(
    None, "--set", help="Override a config key: --set splits.n_folds=2 (dotted key, YAML value; repeatable)."
)
PrintConfigOption = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit.")


DataOption = typer.Option(
    None, "--data", help="Your daily quotes (CSV/Parquet, a file or a folder): used instead of the config's input; "
    "the column preset is guessed as `data check` does, and the folds are sized to the data unless splits are set.",
)
SectorsOption = typer.Option(None, "--sectors", help="Sector table for --data (code -> sector).")
DevicesOption = typer.Option(None, "--devices", help="Devices: N (>1 = DDP, one process per device), 'auto', or a list '0,1'.")


def _devices_override(overrides: dict[str, Any], devices: Optional[str]) -> dict[str, Any]:
    """``overrides`` with ``--devices`` as ``trainer.devices`` (an int where it is one)."""
    if devices is None:
        return overrides
    from kizashi.config import deep_merge

    return deep_merge(overrides, {"trainer": {"devices": int(devices) if devices.lstrip("-").isdigit() else devices}})


def _data_overrides(data: Optional[Path], sectors: Optional[Path], config: Optional[Path]) -> dict[str, Any]:
    """``--data`` / ``--sectors`` as overrides of a job config's ``data.input`` (presets guessed
    from the files' headers); without ``--config`` the dataset goes to artifacts/dataset/<name>."""
    if data is None:
        if sectors is not None:
            raise typer.BadParameter("--sectors needs --data", param_hint="--sectors")
        return {}
    from kizashi.data.panel.read import guess_input_settings, guess_sectors_preset

    inputs: dict[str, Any] = {"path": str(data), **guess_input_settings(data.expanduser())}
    if sectors is not None:
        inputs["sectors"] = str(sectors)
        inputs["sectors_preset"] = guess_sectors_preset(sectors.expanduser())
    overrides: dict[str, Any] = {"data": {"input": inputs}}
    if config is None:
        overrides["data"]["output"] = {"dir": f"artifacts/dataset/{data.expanduser().stem or 'data'}"}
    return overrides


def _fit_splits_unless_set(cfg: Any, data: Optional[Path]) -> Any:
    """With ``--data`` and no ``splits`` in the config file or ``--set``, size the folds to the
    data (``splits.fit_to_data``; the job logs the folds it chose)."""
    if data is not None and "splits" not in cfg.model_fields_set:
        cfg.splits = cfg.splits.model_copy(update={"fit_to_data": True})
    return cfg


def _print_config(cfg: Any) -> None:
    """The resolved config (file + --set + options) as YAML on stdout; the command then exits."""
    import yaml

    from kizashi.config import dump_config

    typer.echo(yaml.safe_dump(dump_config(cfg), sort_keys=False, allow_unicode=True), nl=False)
    raise typer.Exit(0)


def friendly_errors(func: F) -> F:
    """Turn kizashi's own errors into a one-paragraph message and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as err:
            err_console.print(f"[bold red]config error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(2) from None
        except KizashiError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _print_version(value: bool) -> None:
    """``--version``: eager, so it answers before typer asks for a command."""
    if value:
        typer.echo(f"kizashi {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.INFO)


def _build_config(
    config: Optional[Path],
    data: Optional[Path] = None,
    sectors: Optional[Path] = None,
    margin: Optional[Path] = None,
    preset: Optional[str] = None,
    out: Optional[Path] = None,
    settings: Optional[list[str]] = None,
) -> DataBuildConfig:
    from kizashi.data.panel.read import guess_input_settings, guess_sectors_preset

    overrides: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    if data is not None:
        inputs["path"] = str(data)
        if preset is None and config is None:
            inputs.update(guess_input_settings(data))
    if preset is not None:
        inputs["preset"] = preset
    if sectors is not None:
        inputs["sectors"] = str(sectors)
        if config is None:
            inputs["sectors_preset"] = guess_sectors_preset(sectors)
    if margin is not None:
        inputs["margin"] = str(margin)
    if inputs:
        overrides["input"] = inputs
    if out is not None:
        overrides["output"] = {"dir": str(out)}
    from kizashi.config import config_from_dict, deep_merge, parse_overrides

    overrides = deep_merge(overrides, parse_overrides(settings))
    if config is not None:
        return load_config(config, DataBuildConfig, overrides)
    return config_from_dict(DataBuildConfig, overrides, "command line")


def _check_model_spec(config: Any, path: Optional[Path]) -> Any:
    """``config`` (a job config with a ``model`` section), after checking ``model.name``,
    ``model.preset`` and the ``model.overrides`` keys against the model registry, so that a
    typo is a config error naming the file and the key before any data is read or built."""
    from kizashi.config import format_config_problems
    from kizashi.models import config_fields, list_models, model_presets

    spec = config.model
    problems: list[tuple[str, str]] = []
    if spec.name not in list_models():
        problems.append(("model.name", f"unknown model {spec.name!r}; registered models: {list_models()}"))
    else:
        presets = sorted(model_presets(spec.name))
        if spec.preset is not None and spec.preset not in presets:
            problems.append(
                ("model.preset", f"unknown preset {spec.preset!r} for model {spec.name!r}; presets: {presets}")
            )
        fields = config_fields(spec.name)
        problems.extend(
            (f"model.overrides.{key}", f"unknown key for model {spec.name!r}; valid keys: {fields}")
            for key in sorted(set(spec.overrides) - set(fields))
        )
    if problems:
        raise ConfigError(format_config_problems(str(path) if path is not None else "<defaults>", problems))
    return config


def _print_build_summary(result: Any) -> None:
    meta = result.metadata
    table = Table(title="kizashi dataset", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", meta.source)
    table.add_row("written to", str(result.out_dir))
    table.add_row("rows (stock-days)", f"{result.n_rows:,}")
    table.add_row("stocks", f"{result.n_codes:,}")
    table.add_row("dates", f"{meta.date_min} .. {meta.date_max} ({meta.n_days:,} trading days)")
    table.add_row("features", f"{result.n_features} in {len(meta.families)} families")
    table.add_row("targets", ", ".join(meta.target_columns))
    table.add_row("graph edges", f"{result.n_edges:,}")
    dropped = sum(i["count"] for r in meta.validation for i in r["issues"] if i["action"] == "dropped")
    table.add_row("rows dropped by validation", f"{dropped:,} (see metadata.json: validation)")
    table.add_row("seconds", f"{result.seconds:.1f}")
    console.print(table)


@data_app.command("build")
@friendly_errors
def data_build(
    config: Optional[Path] = ConfigOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Daily quotes file or folder (default: the synthetic market)."),
    sectors: Optional[Path] = typer.Option(None, "--sectors", help="Sector table (code -> sector)."),
    margin: Optional[Path] = typer.Option(None, "--margin", help="Weekly margin balances."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Column preset: canonical, jquants, sp500."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: output.dir)."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Build the model-ready dataset: features, targets, normalization, graphs."""
    from kizashi.jobs.data_build import build_dataset

    cfg = _build_config(config, data, sectors, margin, preset, out, settings)
    if print_config:
        _print_config(cfg)
    _print_build_summary(build_dataset(cfg))


@data_app.command("columns")
@friendly_errors
def data_columns(
    dataset_folder: Optional[Path] = typer.Argument(
        None, metavar="DATASET", help="A built dataset folder: list its columns (from its metadata.json)."
    ),
    config: Optional[Path] = ConfigOption,
    dataset: Optional[Path] = typer.Option(
        None, "--dataset", "-d", help="A built dataset folder (same as DATASET)."
    ),
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Only this family."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every feature column with its family, lookback and kind: exactly the columns
    `data build` writes for the config (its inputs are read, because the sector and margin
    columns depend on them), or the columns of a built dataset folder."""
    from kizashi.jobs.data_build import config_columns, dataset_columns, family_columns

    folder = _dataset_folder_argument(dataset_folder, dataset, config)
    cfg: Optional[DataBuildConfig] = None
    if folder is not None:
        rows = dataset_columns(folder)
    else:
        cfg = _build_config(config)
        rows = config_columns(cfg)
    if family is not None:
        rows = family_columns(rows, family, folder, cfg)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title=f"{len(rows)} feature columns", title_justify="left")
    for column in ("name", "family", "lookback", "kind", "normalized"):
        table.add_column(column, justify="right" if column == "lookback" else "left")
    for row in rows:
        table.add_row(row["name"], row["family"], str(row["lookback"]), row["kind"], "yes" if row["normalized"] else "no")
    console.print(table)
    counts = Counter(row["family"] for row in rows)
    console.print("per family: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


def _dataset_folder_argument(
    positional: Optional[Path], option: Optional[Path], config: Optional[Path]
) -> Optional[Path]:
    """The dataset folder named by DATASET or --dataset (not both, and not with --config)."""
    if positional is not None and option is not None and positional != option:
        raise ConfigError(f"two dataset folders given ({positional} and --dataset {option}); give one")
    folder = positional if positional is not None else option
    if folder is not None and config is not None:
        raise ConfigError(f"give a config (--config {config}) or a built dataset folder ({folder}), not both")
    return folder


@data_app.command("check")
@friendly_errors
def data_check(
    file: Path = typer.Argument(..., help="Daily quotes file or folder to check."),
    config: Optional[Path] = ConfigOption,
    preset: Optional[str] = typer.Option(None, "--preset", help="Column preset: canonical, jquants, sp500 (guessed when omitted)."),
    sectors: Optional[Path] = typer.Option(None, "--sectors", help="Also check this sector table against the panel."),
    margin: Optional[Path] = typer.Option(None, "--margin", help="Also check these margin balances."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Validate a raw input file and print what was found (errors, drops, repairs, facts)."""
    from kizashi.jobs.data_build import check_data

    # The findings are this command's output (the table below): not logged a second time.
    data_logger = logging.getLogger("kizashi.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        check = check_data(_build_config(config, file, sectors, margin, preset))
    finally:
        data_logger.setLevel(level)
    if as_json:
        typer.echo(json.dumps(check.to_dict(), indent=1, default=str))
    else:
        for note in check.notes:
            console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        for report in check.reports:
            _print_report(report)
    if not check.ok:
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    """A validation report as text: its summary (one line per finding), then the example rows
    of each error. Report text is printed literally (``[low, high]`` is not rich markup)."""
    status = "[green]OK[/]" if report.ok else "[bold red]ERRORS[/]"
    console.print(f"{status} {escape(report.summary())}", highlight=False)
    for issue in report.issues:
        if issue.action == "error" and issue.examples:
            console.print(f"[red]{escape(issue.rule)}[/] examples:\n{escape(issue.examples)}", highlight=False)


def _format(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return pattern.format(value)


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _print_run_summary(result: Any) -> None:
    from kizashi.evaluation.run_dir import SUMMARY_DISPLAY  # here: polars stays out of CLI start-up

    info = result.info
    title = f"{info.model} walk-forward: {info.source or info.dataset} ({info.n_folds} folds)"
    if info.control:
        title += " [shuffled-target control: RankIC should be ~0]"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for horizon in info.horizons:
        table.add_column(f"{horizon}d", justify="right")
    for key, header, fmt in SUMMARY_DISPLAY:
        table.add_row(header, *(_format(result.summary[h].get(key), fmt) for h in info.horizons))
    oracle = info.references.get("oracle_rank_ic_mean", {})
    if oracle:
        table.add_row("oracle RankIC", *(_format(oracle.get(str(h)), "{:+.4f}") for h in info.horizons))
        table.add_row(
            "RankIC / oracle",
            *(_format(_ratio(result.summary[h].get("rank_ic_mean"), oracle.get(str(h))), "{:.0%}") for h in info.horizons),
        )
    console.print(table)
    console.print(f"run directory: {result.run_dir}  ({result.seconds:.0f} s)")


def _finish_run(result: Any, report: bool, as_json: bool) -> None:
    """After a walk-forward job: the HTML report, then the summary as a table or JSON."""
    if report:
        from kizashi.evaluation.report import write_report

        logging.getLogger(__name__).info("report: %s", write_report(result.run_dir))
    if as_json:
        typer.echo(json.dumps({"run_dir": str(result.run_dir), "summary": result.summary}, default=str))
    else:
        _print_run_summary(result)


@app.command("evaluate")
@friendly_errors
def evaluate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/evaluate/lightgbm.yaml)."),
    data: Optional[Path] = DataOption,
    sectors: Optional[Path] = SectorsOption,
    control: bool = typer.Option(False, "--control", help="Shuffled-target control run (RankIC must be ~0)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: output.dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run from its finished fits (same --out)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report into the run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Walk-forward fit / predict / evaluate; one summary table per horizon."""
    from kizashi.config import deep_merge, load_evaluate_config, parse_overrides
    from kizashi.jobs.evaluate import run_walk_forward

    overrides = deep_merge(_data_overrides(data, sectors, config), parse_overrides(settings))
    cfg = _fit_splits_unless_set(load_evaluate_config(config, overrides), data)
    if print_config:
        _print_config(cfg)
    if out is None and control:
        out = Path(str(cfg.output.dir) + "_control")
    result = run_walk_forward(cfg, control=control, out_dir=out, resume=resume)
    _finish_run(result, report, as_json)


@app.command("train")
@friendly_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/train/atft_gat_fan.yaml)."),
    data: Optional[Path] = DataOption,
    sectors: Optional[Path] = SectorsOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: output.dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoints (same --out)."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per fold: N (>1 = DDP), 'auto', or a list '0,1'."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report into the run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Walk-forward training of a neural model (ATFT-GAT-FAN); same tables and report as `evaluate`."""
    from kizashi.config import deep_merge, load_train_config, parse_overrides
    from kizashi.training.runtime import TrainingInterrupted
    from kizashi.jobs.train import run_training

    route_library_logs()

    overrides = deep_merge(_data_overrides(data, sectors, config), parse_overrides(settings))
    overrides = _devices_override(overrides, devices)
    cfg = _fit_splits_unless_set(_check_model_spec(load_train_config(config, overrides), config), data)
    if print_config:
        _print_config(cfg)
    try:
        result = run_training(cfg, out_dir=out, resume=resume)
    except TrainingInterrupted as err:
        err_console.print(f"[bold yellow]interrupted:[/] {err}", highlight=False)
        raise typer.Exit(130 if err.signal_name == "SIGINT" else 143) from None
    if not result.summary:  # a DDP rank other than 0: rank 0 writes and reports
        return
    _finish_run(result, report, as_json)


@app.command("pretrain")
@friendly_errors
def pretrain(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/pretrain/stage1.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: output.dir)."),
    devices: Optional[str] = DevicesOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Stage-1 self-supervised pretraining: masked multi-timeframe bar reconstruction."""
    from kizashi.config import load_pretrain_config, parse_overrides
    from kizashi.jobs.pretrain import run_pretraining

    route_library_logs()
    cfg = _check_model_spec(load_pretrain_config(config, _devices_override(parse_overrides(settings), devices)),
                            config)
    if print_config:
        _print_config(cfg)
    result = run_pretraining(cfg, out_dir=out)
    if not result.summary:  # a DDP rank other than 0: rank 0 writes and reports
        return
    if as_json:
        typer.echo(json.dumps({"out_dir": str(result.out_dir), "metrics": result.metrics,
                               "summary": {k: v for k, v in result.summary.items() if k != "config"}}, default=str))
        return
    from rich.table import Table

    table = Table(title=f"Stage-1 pretraining: {result.summary['encoder']}, {result.summary['parameters']:,} parameters")
    for column in ("epoch", "train loss", "val reconstruction", "val masked corr", "val consistency", "LM frozen", "seconds"):
        table.add_column(column, justify="right")
    for row in result.metrics:
        frozen = row["lm_frozen_fraction"]
        table.add_row(str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['val_reconstruction']:.4f}",
                      f"{row['val_masked_corr']:+.3f}", f"{row['val_consistency']:.4f}",
                      "-" if frozen != frozen else f"{frozen:.0%}", f"{row['epoch_seconds']:.1f}")
    console.print(table)
    console.print(f"encoder: {result.out_dir / 'encoder.pt'}  ({result.summary['seconds']:.0f} s)")


@app.command("finetune")
@friendly_errors
def finetune(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The pretraining YAML (data, windows, model)."),
    encoder: Optional[Path] = typer.Option(None, "--encoder", help="encoder.pt from `kizashi pretrain`; omit = from scratch."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: output.dir/finetune)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: trainer.max_epochs)."),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="Train the head only (a linear probe)."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Fine-tune a Stage-1 encoder on the windows' forward return (config `label`; val MSE, IC, rank IC)."""
    from rich.table import Table

    from kizashi.config import load_pretrain_config, parse_overrides
    from kizashi.jobs.finetune import run_finetune

    route_library_logs()

    cfg = _check_model_spec(load_pretrain_config(config, parse_overrides(settings)), config)
    if print_config:
        _print_config(cfg)
    result = run_finetune(cfg, encoder, out, epochs=epochs, freeze_encoder=freeze_encoder)
    table = Table(title=f"fine-tuning ({'pretrained encoder' if result.pretrained else 'from scratch'})")
    for column in ("epoch", "train MSE", "val MSE", "zero-forecast MSE", "val IC", "val rank IC", "labels", "seconds"):
        table.add_column(column, justify="right")
    for row in result.metrics:
        table.add_row(str(row["epoch"]), f"{row['train_mse']:.4f}", f"{row['val_mse']:.4f}",
                      f"{row['val_zero_mse']:.4f}", f"{row['val_ic']:+.4f}", f"{row['val_rank_ic']:+.4f}",
                      str(row["val_labels"]), f"{row['epoch_seconds']:.1f}")
    console.print(table)
    console.print(f"metrics: {result.out_dir / 'finetune_metrics.csv'}; predictions of epoch {result.best_epoch} "
                  f"(best validation rank IC): {result.out_dir / 'predictions.parquet'}")


@app.command("experiment")
@friendly_errors
def experiment(
    config: Path = typer.Argument(..., help="Experiment YAML (configs/experiments/lm_transfer.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: output.dir)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated settings to run now (others: reused if done)."),
    force: bool = typer.Option(False, "--force", help="Rerun settings that already have a finished run."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Run a pretraining config under named settings (same seed and data) and compare them."""
    from kizashi.config import load_experiment_config, parse_overrides
    from kizashi.jobs.experiment import run_experiment
    from kizashi.jobs.pretrain import run_pretraining

    route_library_logs()

    names = [name.strip() for name in only.split(",") if name.strip()] if only else None
    cfg = load_experiment_config(config, parse_overrides(settings))
    if print_config:
        _print_config(cfg)
    result = run_experiment(cfg, out, pretrain=run_pretraining, only=names, force=force,
                            source=str(config))
    if as_json:
        typer.echo(json.dumps({"out_dir": str(result.out_dir), "report": result.report}, default=str))
        return
    report_ = result.report
    epochs = report_["epochs"]
    table = Table(title=f"experiment {report_['name']}: validation reconstruction (masked corr)")
    for column in ("setting", *(f"epoch {e}" for e in epochs), "last", f"epoch reaching {report_['reference']}'s best",
                   "fit s", "peak GiB"):
        table.add_column(column, justify="right")
    for name, s in report_["settings"].items():
        cells = []
        for key in [str(e) for e in epochs]:
            rec, corr = s["val_reconstruction"][key], s["val_masked_corr"][key]
            cells.append("-" if rec is None else f"{rec:.4f} ({corr:+.3f})")
        reach = s["epoch_reaching_reference_best"]
        table.add_row(name, *cells, f"{s['last_val_reconstruction']:.4f} ({s['last_val_masked_corr']:+.3f})",
                      "never" if reach is None else str(reach), f"{s['fit_seconds']:.1f}", f"{s['peak_memory_gib']:.2f}")
    console.print(table)
    for line in report_["findings"]:
        console.print(f"- {line}")
    console.print(f"report: {result.out_dir / 'report.md'}")


@lm_app.command("train")
@friendly_errors
def lm_train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/lm/phase2_small.yaml)."),
    text: Optional[Path] = typer.Option(None, "--text", help="UTF-8 text file (overrides data.text)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: output.dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.ckpt."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-clock budget of the whole job in minutes, final validation included (validation subsampled to fit)."),
    devices: Optional[str] = DevicesOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    settings: Optional[list[str]] = SetOption,
    print_config: bool = PrintConfigOption,
) -> None:
    """Train a token language model; reports validation loss in nats per character (char tokenizer)."""
    from kizashi.config import load_lm_config, parse_overrides
    from kizashi.jobs.lm import run_lm_training

    route_library_logs()

    overrides: dict[str, Any] = parse_overrides(settings)
    if text is not None:
        overrides.setdefault("data", {})["text"] = str(text)
    if max_minutes is not None:
        overrides.setdefault("trainer", {})["max_minutes"] = max_minutes
    overrides = _devices_override(overrides, devices)
    cfg = _check_model_spec(load_lm_config(config, overrides), config)
    if print_config:
        _print_config(cfg)
    result = run_lm_training(cfg, out, resume=resume)
    if not result.summary:  # a DDP rank other than 0: rank 0 writes and reports
        return
    summary = {k: v for k, v in result.summary.items() if k != "config"}
    if as_json:
        typer.echo(json.dumps({"out_dir": str(result.out_dir), "metrics": result.metrics, "summary": summary},
                              default=str))
        return
    table = Table(title=f"{summary['model']} ({summary['parameters']:,} parameters): validation loss, nats/"
                        f"{'char' if summary['tokenizer'] == 'char' else 'byte'}")
    for column in ("epoch", "step", "train loss", "val loss", "val bits", "tokens/s"):
        table.add_column(column, justify="right")
    for row in result.metrics:
        table.add_row(str(row["epoch"]), str(row["step"]), f"{row['train_loss']:.4f}", f"{row['val_loss']:.4f}",
                      f"{row['val_bits']:.3f}", f"{row['tokens_per_second']:,.0f}")
    console.print(table)
    console.print(f"best {summary['best_val_loss']:.4f} at step {summary['best_step']}; {result.out_dir}")


@lm_app.command("sample")
@friendly_errors
def lm_sample(
    run_dir: Path = typer.Argument(..., help="An `lm train` output directory."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue (characters of the training alphabet)."),
    tokens: int = typer.Option(200, "--tokens", "-n", help="How many tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 = greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample among the k most likely tokens only."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed gives the same text)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ..."),
) -> None:
    """Generate text with a trained token LM: the prompt, then N sampled tokens."""
    from kizashi.jobs.lm import sample_text

    typer.echo(sample_text(run_dir, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed, device=device))


@app.command("report")
@friendly_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kizashi evaluate`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory (default: RUN_DIR/report)."),
) -> None:
    """Write the static HTML report (PNG plots) of a run directory."""
    from kizashi.evaluation.report import write_report

    console.print(f"report: {write_report(run_dir, out)}")


@app.command("fit-final")
@friendly_errors
def fit_final_command(
    run: Path = typer.Option(..., "--run", help="An `evaluate` run directory (LightGBM) or a `train` run "
                             "directory (ATFT-GAT-FAN)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The final model folder (default RUN/final)."),
) -> None:
    """Refit the run's LightGBM (or ATFT-GAT-FAN) on every labelled day, with the walk-forward's
    median best iteration per horizon (or best epoch), and save it for `kizashi predict`."""
    from kizashi.jobs.fit_final import fit_final

    folder, model = fit_final(run, out)
    rounds = ", ".join(f"{h}d: {n}" for h, n in model.rounds.items())
    length = f"epochs {model.epochs}" if model.epochs is not None else f"rounds {rounds}"
    console.print(f"final model: {folder}  ({len(model.features)} features, {length}, "
                  f"trained {model.train_first} .. {model.train_last})")


@app.command("predict")
@friendly_errors
def predict_command(
    model: Path = typer.Option(..., "--model", "-m", help="A `kizashi fit-final` folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Quotes in the training layout, with the new days "
                                        "(default: the training file)."),
    sectors: Optional[Path] = typer.Option(None, "--sectors", help="Sector table for --data (default: the training one)."),
    date: Optional[str] = typer.Option(None, "--date", help="The day to score, YYYY-MM-DD (default: the data's last)."),
    out: Path = typer.Option(Path("signals"), "--out", "-o", help="Output folder for signals.parquet/.csv/.json."),
    max_stale_days: int = typer.Option(7, "--max-stale-days", help="Without --date: refuse data whose last day is older."),
    top: int = typer.Option(10, "--top", help="Rows of each horizon to print."),
    device: Optional[str] = typer.Option(None, "--device", help="ATFT-GAT-FAN: cpu, cuda, cuda:1 ... (default: "
                                         "CUDA when available, else the CPU)."),
) -> None:
    """Score one day's stocks with a final model: signals.parquet / .csv (date, code, horizon,
    score, rank, percentile) and signals.json (hashes)."""
    from kizashi.jobs.predict import predict_day

    day = _iso_date(date, "--date") if date is not None else None
    result = predict_day(model, data=data, sectors=sectors, date=day, out_dir=out, max_stale_days=max_stale_days,
                         device=device)
    for horizon in result.summary["horizons"]:
        rows = result.signals.filter(result.signals["horizon"] == horizon).head(top)
        table = Table(title=f"{result.date}: top {len(rows)} of {result.summary['n_stocks']} stocks, {horizon}d",
                      title_justify="left")
        for name in ("rank", "code", "score", "percentile"):
            table.add_column(name, justify="left" if name == "code" else "right")
        for row in rows.iter_rows(named=True):
            table.add_row(str(row["rank"]), row["code"], f"{row['score']:+.4f}", f"{row['percentile']:.3f}")
        console.print(table)
    console.print(f"signals: {result.out_dir}")


@app.command("monitor")
@friendly_errors
def monitor_command(
    model: Path = typer.Option(..., "--model", "-m", help="A `kizashi fit-final` folder."),
    since: str = typer.Option(..., "--since", help="The first day to watch, YYYY-MM-DD."),
    until: Optional[str] = typer.Option(None, "--until", help="The last day (default: the data's last)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Quotes with the days to watch (default: the training file)."),
    sectors: Optional[Path] = typer.Option(None, "--sectors", help="Sector table for --data."),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="The model's horizon to watch (default: its first)."),
    out: Path = typer.Option(Path("monitor"), "--out", "-o", help="Output folder for monitor.json / monitor.html."),
    fail_on_alarm: bool = typer.Option(False, "--fail-on-alarm", help="Exit with code 3 when an alarm is active."),
    settings: Optional[list[str]] = typer.Option(
        None, "--set", help="A monitoring setting: --set psi_alarm=0.3 (kizashi.monitoring.MonitorSettings)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="ATFT-GAT-FAN: cpu, cuda, cuda:1 ... (default: "
                                         "CUDA when available, else the CPU)."),
) -> None:
    """Watch a final model on new days: drift of its scores and top features, coverage, and
    the realized RankIC with its band; monitor.json and monitor.html, alarms logged."""
    from kizashi.config import parse_overrides
    from kizashi.jobs.monitor import monitor_model

    first, last = _iso_date(since, "--since"), _iso_date(until, "--until") if until else None
    folder, result = monitor_model(model, first, until=last, data=data, sectors=sectors, horizon=horizon,
                                   out_dir=out, settings=parse_overrides(settings), device=device)
    status = result.status()
    console.print(f"monitor status: {status} ({len(result.active_alarms())} active alarm(s)); {folder / 'monitor.html'}")
    if fail_on_alarm and status == "alarm":
        raise typer.Exit(3)


def _iso_date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a YYYY-MM-DD date: {text!r}", param_hint=option) from None


@app.command("strategies")
@friendly_errors
def strategies_command(
    run_dir: Path = typer.Argument(..., help="An `evaluate` or `train` run directory."),
    horizon: Optional[list[int]] = typer.Option(None, "--horizon", help="A horizon to (re)do; repeat it; default: all."),
    settings: Optional[list[str]] = typer.Option(
        None, "--set", help="Override the run's portfolio settings, e.g. --set portfolio.costs.cost_bps=5."
    ),
) -> None:
    """Choose a book for the run's signal on its validation slices, fold by fold; every
    candidate's test figures are shown beside the choice, not used for it
    (RUN_DIR/strategies.csv, RUN_DIR/strategy_daily.parquet). `evaluate` and `train` do this
    at the end of a run."""
    from kizashi.config import parse_overrides
    from kizashi.jobs.strategies import choose_strategies

    overrides = parse_overrides(settings)
    unknown = sorted(set(overrides) - {"portfolio"})
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: only `portfolio.*` keys can be set here")
    choices = choose_strategies(run_dir, horizon or None, overrides.get("portfolio"))
    for choice in choices:
        _print_strategy_table(choice.table, choice.horizon)
    console.print("to trade from now on (chosen on every slice): "
                  + ", ".join(f"{c.horizon}d {c.selection.selected}" for c in choices)
                  + f"; {Path(run_dir) / 'strategies.csv'}")


def _print_strategy_table(table: Any, horizon: int) -> None:
    """The terminal table of one horizon's rows of ``strategies.csv``
    (:mod:`kizashi.portfolio.walk_forward`): the walk-forward choice, then every candidate."""
    import polars as pl

    from kizashi.evaluation.run_dir import WALK_FORWARD_CHOICE

    rows = table.filter(pl.col("horizon") == horizon)
    chosen = rows.filter(pl.col("strategy") == WALK_FORWARD_CHOICE).row(0, named=True)
    out = Table(title=f"{horizon}d books chosen on validation slices, fold by fold; each candidate's test figures "
                      "shown, not used for the choice", title_justify="left")
    for name in ("strategy", "part", "gross Sharpe", "net Sharpe", "turnover", "holding days", ""):
        out.add_column(name, justify="left" if name in ("strategy", "part", "") else "right")
    for row in [chosen, *rows.filter(pl.col("strategy") != WALK_FORWARD_CHOICE).iter_rows(named=True)]:
        mark = "the figure to quote" if row is chosen else ("chosen" if row["selected"] else "")
        out.add_row(row["strategy"], row["part"], _format(row["gross_sharpe"], "{:+.2f}"),
                    _format(row["net_sharpe"], "{:+.2f}"), _format(row["turnover"], "{:.2f}"),
                    _format(row["avg_holding_days"], "{:.1f}"), mark)
    console.print(out)
    console.print(f"{horizon}d: {chosen['note']}")


@app.command("ensemble")
@friendly_errors
def ensemble(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories on the same dataset and folds."),
    out: Path = typer.Option(..., "--out", "-o", help="The ensemble's run directory."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, one per run (default equal)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report into the run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """A run directory from the per-day rank average of several runs' predictions."""
    from kizashi.jobs.ensemble import run_ensemble

    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise typer.BadParameter(f"not a comma-separated list of numbers: {weights!r}", param_hint="--weights") from None
    _finish_run(run_ensemble(run_dirs, out, weights=parsed), report, as_json)


runs_app = typer.Typer(help="Run directories of evaluate / train: compare them.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("compare")
@friendly_errors
def runs_compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories (evaluate / train)."),
    html: Path = typer.Option(Path("compare.html"), "--html", help="Where to write the comparison page."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
) -> None:
    """The runs' summaries side by side per horizon, and for every pair the paired t-stat of
    the daily RankIC (and net long-short return) difference on their common days."""
    from kizashi.evaluation.compare import comparison_json, comparison_tables, compare_runs, write_comparison_html

    comparison = compare_runs(run_dirs)
    page = write_comparison_html(comparison, html)
    if as_json:
        typer.echo(comparison_json(comparison))
        return
    for table in comparison_tables(comparison):
        console.print(table)
    console.print(f"comparison page: {page}")


export_app = typer.Typer(help="Export a run directory to the tools users open it in.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("alphalens")
@friendly_errors
def export_alphalens_command(
    run_dir: Path = typer.Argument(..., help="A run directory (evaluate / train / ensemble)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/alphalens)."),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="The predictions' horizon (default: the shortest)."),
) -> None:
    """Write the run's factor (predictions) and prices frames as alphalens reads them, with
    alphalens.md: the lines of Python that open a tear sheet."""
    from kizashi.jobs.export import GUIDE, export_alphalens

    folder = export_alphalens(run_dir, out, horizon)
    console.print(f"alphalens frames: {folder}  (open a tear sheet: {folder / GUIDE})")


models_app = typer.Typer(help="Models in the registry (kizashi.models.create_model).", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@friendly_errors
def models_list(
    n_features: int = typer.Option(400, "--n-features", help="Input width used to count parameters."),
) -> None:
    """Every registered model and preset with its parameter count."""
    from kizashi.models import config_fields, list_models, model_presets, parameter_count

    table = Table(title="kizashi models", title_justify="left")
    for column in ("model", "preset", "parameters", "preset fields"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name in list_models():
        for preset, fields in model_presets(name).items():
            overrides = {"n_features": n_features} if "n_features" in config_fields(name) else {}
            count = parameter_count(name, preset=preset, **overrides)
            table.add_row(name, preset, f"{count:,}", ", ".join(f"{k}={v}" for k, v in fields.items()))
    console.print(table)


@app.command("demo")
@friendly_errors
def demo(
    data: Optional[Path] = typer.Option(None, "--data", help="Daily quotes (default: the embedded synthetic market)."),
    sectors: Optional[Path] = typer.Option(None, "--sectors", help="Sector table for --data."),
    out: Path = typer.Option(Path("artifacts/demo"), "--out", "-o", help="Output directory (dataset/ and run/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped demo from its finished fits."),
) -> None:
    """The main job: data -> features -> LightGBM walk-forward -> summary table and report ->
    books chosen on validation slices -> the final model -> signals for the data's last day."""
    import polars as pl

    from kizashi.config import EvaluateConfig
    from kizashi.data.panel.read import guess_preset
    from kizashi.evaluation.report import write_report
    from kizashi.evaluation.run_dir import STRATEGIES
    from kizashi.jobs.evaluate import run_walk_forward
    from kizashi.jobs.fit_final import fit_final
    from kizashi.jobs.predict import predict_day

    data_config = _build_config(None, data, sectors, out=out / "dataset")
    evaluate_config = EvaluateConfig(data=data_config)
    if data is not None:
        evaluate_config.splits = evaluate_config.splits.model_copy(update={"fit_to_data": True})
        if guess_preset(data) == "sp500":
            evaluate_config.caveats = [SP500_CAVEAT]
    result = run_walk_forward(evaluate_config, out_dir=out / "run", resume=resume)
    _print_run_summary(result)
    console.print(f"report: {write_report(result.run_dir)}")

    if (result.run_dir / STRATEGIES).is_file():
        _print_strategy_table(pl.read_csv(result.run_dir / STRATEGIES), result.info.horizons[0])
    else:
        console.print("no books chosen: the splits have no validation slices (splits.val_days = 0)")

    final, model = fit_final(result.run_dir, out / "final")
    signals = predict_day(final, date=dt.date.fromisoformat(model.train_last), out_dir=out / "signals")
    for horizon in model.horizons:
        top = signals.signals.filter(pl.col("horizon") == horizon).head(5)
        console.print(f"signals for the day after {signals.date}, {horizon}d, top 5 of {signals.summary['n_stocks']}: "
                      + ", ".join(f"{r['code']} ({r['score']:+.4f})" for r in top.iter_rows(named=True)))
    console.print(f"final model: {final}; signals: {signals.out_dir / 'signals.csv'}")


SP500_CAVEAT = (
    "Survivorship bias: the S&P 500 file holds the stocks that were index members when it was "
    "made, so stocks that left the index (delisted, acquired, failed) are missing from earlier years."
)


if __name__ == "__main__":  # pragma: no cover
    app()
