"""Thresholds and windows of ``kizashi monitor`` (:class:`MonitorSettings`).

Why these statistics and these default thresholds
-------------------------------------------------

* **PSI** (population stability index, :func:`kizashi.monitoring.drift.psi`) over ``n_bins``
  reference-quantile bins: the industry rule of thumb is *< 0.1 stable, 0.1–0.25 moderate
  shift, > 0.25 major shift*, hence ``psi_warn = 0.1`` and ``psi_alarm = 0.25``.
* **KS**: the two-sample Kolmogorov–Smirnov *statistic* ``D = sup_x |F_ref(x) − F_day(x)|``,
  not its p-value. A p-value answers "is there any difference at all?", and with thousands
  of stocks a day it is tiny for shifts nobody cares about (with N = 4000 scores a day a
  mean shift of 0.05 sd has p < 0.01). ``D`` is an effect size (the largest share of the
  universe that moved across some score level) whose meaning does not depend on N. For a
  normal distribution whose mean moves by ``δ`` sd, ``D = 2Φ(δ/2) − 1`` and the decile PSI is
  about ``δ²`` (0.10 at δ ≈ 0.32, 0.25 at δ ≈ 0.51); the defaults ``ks_warn = 0.12`` and
  ``ks_alarm = 0.2`` are the KS values of those same two shifts, so both statistics warn and
  alarm at about the same drift.
* **Sampling floor**: both statistics have a floor under no drift at all that shrinks with
  the number N of stocks a day: ``E[PSI] ≈ (n_bins − 1)(1/N + 1/M)`` (M reference values) and
  ``P(D > t) ≈ 2 exp(−2 N t²)``. The defaults suit N ≳ 500; :func:`run_monitor
  <kizashi.monitoring.monitor.run_monitor>` logs a warning when the day's N makes the
  floor approach a threshold.
* **Realized RankIC** (:mod:`kizashi.monitoring.rank_ic`): the rolling mean ``m`` of the last
  ``rank_ic_window`` daily RankIC values, its standard error ``se`` and the band
  ``m ± rank_ic_z · se``. The **alarm** fires when the whole band lies below
  ``rank_ic_floor`` (default 0): the signal is, at 95 % confidence, no longer positive
  (dead or flipped). The **warning** ``rank_ic_decay`` fires when the reference (walk-forward)
  mean RankIC is known and the band's upper end lies below ``rank_ic_decay_fraction`` times
  it: the signal is significantly weaker than it was in validation.
* **Coverage** = stocks scored that day / the reference universe size (median number of
  stocks scored per day in the reference period): warning below ``coverage_warn``, alarm
  below ``min_coverage``.

No alarm or warning of any kind is raised before the stream's ``min_days``-th day (day index
``min_days − 1``, counting the first date of the stream given as day 0), and the RankIC rules
need at least ``rank_ic_min_days`` daily RankIC values in the window.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from kizashi.config import StrictModel


class MonitorSettings(StrictModel):
    """Thresholds and windows of the monitor (see the module docstring for the reasons)."""

    n_bins: int = Field(10, ge=2, le=100, description="reference-quantile bins of PSI")
    psi_epsilon: float = Field(1e-4, gt=0.0, lt=0.01,
                               description="floor of a bin share inside PSI's log (empty bins)")
    max_reference_values: int = Field(
        2048, ge=16, description="sorted reference scores kept for KS (a quantile sketch beyond)")
    psi_warn: float = Field(0.1, gt=0.0)
    psi_alarm: float = Field(0.25, gt=0.0)
    ks_warn: float = Field(0.12, gt=0.0, le=1.0, description="KS statistic D, not a p-value")
    ks_alarm: float = Field(0.2, gt=0.0, le=1.0, description="KS statistic D, not a p-value")
    n_top_features: int = Field(20, ge=0, description="features whose drift is watched")
    feature_psi_warn: float = Field(0.1, gt=0.0)
    feature_psi_alarm: float = Field(0.25, gt=0.0)
    coverage_warn: float = Field(0.9, ge=0.0, le=1.0)
    min_coverage: float = Field(0.8, ge=0.0, le=1.0,
                                description="alarm below this share of the reference universe")
    rank_ic_window: int = Field(60, ge=2, description="daily RankIC values in the rolling window")
    rank_ic_min_days: int = Field(20, ge=2, description="RankIC values needed before its rules apply")
    rank_ic_z: float = Field(1.96, gt=0.0, description="half-width of the band in standard errors")
    rank_ic_nw_lags: int = Field(
        0, ge=0, description="Newey-West lags of the band's standard error; horizon - 1 for "
                             "overlapping forward returns, 0 for the i.i.d. formula")
    rank_ic_floor: float = Field(0.0, description="alarm when the band's upper end is below this")
    rank_ic_decay_fraction: float = Field(
        0.5, ge=0.0, le=1.0,
        description="warn when the band's upper end is below this fraction of the reference RankIC")
    min_days: int = Field(5, ge=1, description="no alarm before the stream's min_days-th day")

    @model_validator(mode="after")
    def _ordered(self) -> MonitorSettings:
        pairs = [("psi_warn", "psi_alarm"), ("ks_warn", "ks_alarm"),
                 ("feature_psi_warn", "feature_psi_alarm")]
        for warn, alarm in pairs:
            if getattr(self, warn) > getattr(self, alarm):
                raise ValueError(f"{warn} ({getattr(self, warn)}) must be <= {alarm} ({getattr(self, alarm)})")
        if self.min_coverage > self.coverage_warn:
            raise ValueError(f"min_coverage ({self.min_coverage}) must be <= coverage_warn ({self.coverage_warn})")
        if self.rank_ic_min_days > self.rank_ic_window:
            raise ValueError(
                f"rank_ic_min_days ({self.rank_ic_min_days}) must be <= rank_ic_window ({self.rank_ic_window})")
        return self
