"""`kizashi predict` for one day, end to end, against a full `kizashi data build` of the same
data in the same run, with the time of each stage.

    python benchmarks/bench_predict.py --model /tmp/sp500_final [--date 2018-12-31] [--repeats 3]

The model folder comes from `kizashi fit-final` (e.g. on artifacts/runs/sp500_lightgbm). The
stages are timed by wrapping the builder's steps: inputs (read, check, adjust, base panel and
targets), context tables (market, sectors, correlation graphs), the day's features with warm-up,
the boosters, and writing the signals. The full build writes a dataset to a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from kizashi.config import DataBuildConfig, config_from_dict
from kizashi.datasets import build as build_module
from kizashi.datasets.build import build_dataset
from kizashi.jobs.predict import predict_day
from kizashi.training import final_model as final_module
from kizashi.training.final_model import load_final_model

log = logging.getLogger("bench_predict")
STAGES = {"_prepare": "inputs", "_context": "context tables", "feature_chunk": "features of the day"}


def _timed(timings: dict[str, list[float]], name: str, func):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            timings[name].append(time.perf_counter() - started)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a `kizashi fit-final` folder")
    parser.add_argument("--date", default=None, help="the day to score (default: the training data's last day)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-build", action="store_true", help="leave out the full build")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    model = load_final_model(args.model)
    day = dt.date.fromisoformat(args.date or model.train_last)
    timings: dict[str, list[float]] = defaultdict(list)
    for name in STAGES:
        setattr(build_module, name, _timed(timings, STAGES[name], getattr(build_module, name)))
    predict_boosters = final_module.FinalModel.predict
    final_module.FinalModel.predict = _timed(timings, "boosters", predict_boosters)
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            result = predict_day(args.model, date=day, out_dir=Path(tmp) / f"signals_{repeat}")
            totals.append(time.perf_counter() - started)
        n_stocks = result.summary["n_stocks"]
        build_seconds = None
        if not args.skip_build:
            config = config_from_dict(DataBuildConfig, model.data_config, source="final_model.json")
            started = time.perf_counter()
            build_dataset(config, Path(tmp) / "dataset")
            build_seconds = time.perf_counter() - started
    predict_median = statistics.median(totals)
    print(f"predict {day}: {n_stocks} stocks x {len(model.horizons)} horizons, {len(model.features)} features")
    print(f"  end to end: median {predict_median:.2f} s over {args.repeats} runs (min {min(totals):.2f} s)")
    for name, values in timings.items():
        print(f"  {name:22s} median {statistics.median(values):6.2f} s")
    if build_seconds is not None:
        print(f"full data build of the same data: {build_seconds:.1f} s; predict / build = {predict_median / build_seconds:.3f}")


if __name__ == "__main__":
    main()
