"""Write ``tests/features/data/alpha158_qlib_fixture.parquet``: a small slice of the S&P 500
file with Qlib's own Alpha158 values on it, so that ``tests/features/test_alpha158.py`` checks
kizashi's ``alpha158`` family against Qlib without Qlib installed.

Run it with the peer environment (see ``benchmarks/bench_qlib_alpha158.py`` for its setup):

    .venv-peers/bin/python benchmarks/make_alpha158_fixture.py
    .venv-peers/bin/python benchmarks/make_alpha158_fixture.py --check-float64

``--check-float64`` writes nothing: it runs Qlib's handler again on the fixture's inputs with
every stored field read as float64 instead of float32 (Qlib's ``FileFeatureStorage`` patched
in this process only), and prints, per feature, the largest difference from kizashi's
alpha158 values: with float64 inputs every feature agrees to 1e-5 relative + 1e-12, which
shows that the looser floor of CORR/CORD/WVMA in the test is Qlib's float32 arithmetic.

The slice: the stocks of :data:`CODES` over :data:`N_SESSIONS` sessions from :data:`START`,
read and adjusted as ``kizashi data build`` reads ``configs/data/sp500.yaml``
(``load_inputs``), prices and volumes rounded to float32 (Qlib's on-disk precision). It
holds a missing session (ABMD 2012-12-06: a zero-volume, no-range row that the validation
drops), a listing inside the slice (ABBV from 2013-01-02), a low-priced stock (AMD, ~$2.5)
and a high-priced one (AAPL, ~$485); 4 stocks x 105 sessions keep the file under 300 KB (158
float32 columns of Qlib values do not compress much). The slice is written in Qlib's on-disk format to a temporary folder
(``bench_qlib_alpha158.write_qlib_provider``) and Qlib's ``Alpha158`` handler computes the
raw features (``DataHandlerLP.DK_R``, before any processor) over every instrument and day.

The fixture's rows are the slice's rows (Qlib also emits a row for each missing session of
a stock inside its first..last dates; those rows have no inputs and are left out, their
count is logged). Columns: ``code, date, open, high, low, close, volume`` (float32, the
values Qlib read) and ``qlib_<NAME>`` for each of Qlib's 158 columns (float32, as Qlib returns
them; ``qlib_VWAP0`` is all null: the file has no VWAP).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_qlib_alpha158 import (  # benchmarks/ is on sys.path
    float32_panel,
    kizashi_alpha158,
    load_sp500_rows,
    qlib_alpha158,
    qlib_frame_to_polars,
    read_as_float64,
    sp500_config,
    write_qlib_provider,
)

CODES = ["AAPL", "ABBV", "ABMD", "AMD"]
START = dt.date(2012, 11, 15)
N_SESSIONS = 105
OUT = HERE.parent / "tests" / "features" / "data" / "alpha158_qlib_fixture.parquet"

log = logging.getLogger("make_alpha158_fixture")


def check_float64() -> None:
    """Qlib on the fixture's inputs read as float64 against kizashi: the largest relative
    difference (over |qlib| + 1e-12 / 1e-5) per feature, and the features that exceed 1e-5."""
    import numpy as np
    import polars as pl

    from kizashi.features.alpha158 import PREFIX, QLIB_NAMES

    read_as_float64()
    fixture = pl.read_parquet(OUT)
    panel = fixture.select("code", "date", *(pl.col(p).cast(pl.Float64) for p in ("open", "high", "low", "close", "volume")))
    with tempfile.TemporaryDirectory(prefix="alpha158_fixture-") as tmp:
        write_qlib_provider(panel, Path(tmp))
        dates = panel.get_column("date")
        features, _ = qlib_alpha158(Path(tmp), dates.min(), dates.max(), kernels=1)
    qlib64 = qlib_frame_to_polars(features)
    ours, _ = kizashi_alpha158(panel, dtype=pl.Float64())
    joined = panel.select("code", "date").join(ours, on=["code", "date"], how="left").join(
        qlib64.rename({n: f"q_{n}" for n in QLIB_NAMES}), on=["code", "date"], how="left"
    )
    joined32 = panel.select("code", "date").join(fixture, on=["code", "date"], how="left")
    beyond = []
    for name in QLIB_NAMES:
        k = joined.get_column(PREFIX + name).to_numpy().astype(float)
        rows = []
        for q in (joined.get_column(f"q_{name}").to_numpy().astype(float),
                  joined32.get_column(f"qlib_{name}").to_numpy().astype(float)):
            both = ~np.isnan(k) & ~np.isnan(q)
            excess = np.abs(k[both] - q[both]) - 1e-5 * np.abs(q[both])
            rows.append((np.abs(k[both] - q[both]).max(), excess.max()))
        (abs64, excess64), (abs32, _) = rows
        log.info("%-8s max |k - q|: Qlib float64 %.2e, Qlib float32 (fixture) %.2e", name, abs64, abs32)
        if excess64 > 1e-12:
            beyond.append(name)
    log.info("features beyond 1e-5 relative + 1e-12 against Qlib on float64 inputs: %s", beyond or "none")


def main() -> None:
    import polars as pl
    import pyarrow.parquet as pq

    from kizashi.data.inputs import load_inputs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-float64", action="store_true", help="compare only; write nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stdout)
    if args.check_float64:
        check_float64()
        return
    with tempfile.TemporaryDirectory(prefix="alpha158_fixture-") as tmp:
        work = Path(tmp)
        raw = load_sp500_rows(START, START + dt.timedelta(days=N_SESSIONS * 2), CODES, work / "rows.parquet")
        panel = float32_panel(load_inputs(sp500_config(raw, work / "unused").input).panel)
        last = panel.get_column("date").unique().sort()[N_SESSIONS - 1]
        panel = panel.filter(pl.col("date") <= last)
        stats = write_qlib_provider(panel, work / "qlib_data")
        features, seconds = qlib_alpha158(work / "qlib_data", START, last, kernels=1)
        qlib_values = qlib_frame_to_polars(features)
    log.info("Qlib Alpha158: %d rows x %d columns in %.1fs; %d missing stock-days on the calendar",
             qlib_values.height, qlib_values.width - 2, seconds, stats["missing_days"])
    extra = qlib_values.join(panel, on=["code", "date"], how="anti")
    log.info("Qlib rows without an input row (a stock's missing sessions), left out: %s",
             extra.select("code", "date").rows())
    renamed = qlib_values.rename({n: f"qlib_{n}" for n in qlib_values.columns if n not in ("code", "date")})
    fixture = (
        panel.with_columns(pl.col(f).cast(pl.Float32) for f in ("open", "high", "low", "close", "volume"))
        .join(renamed, on=["code", "date"], how="left")
        .with_columns(pl.selectors.starts_with("qlib_").cast(pl.Float32).fill_nan(None))
        .sort("code", "date")
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table = fixture.to_arrow()
    floats = [n for n in fixture.columns if n not in ("code", "date")]
    pq.write_table(table, OUT, compression="zstd", compression_level=19, use_byte_stream_split=floats)
    log.info("wrote %s: %d rows x %d columns, %.0f KB", OUT, fixture.height, fixture.width, OUT.stat().st_size / 1024)


if __name__ == "__main__":
    main()
