"""Monitoring of a deployed signal: drift of predictions and features against the training
period, realized RankIC over rolling windows, coverage, and alarms.

Typical use (what ``kizashi monitor`` and a predict job call)::

    reference = build_reference(oos_predictions, features=train_features,
                                feature_names=top_features, reference_rank_ic=daily["rank_ic"])
    reference.save(artefact / "monitor_reference.json")        # or embed reference.to_json()
    ...
    result = run_monitor(MonitorReference.load(path), signals, features=features,
                         realized=realized, settings=MonitorSettings(...))
    write_monitor_report(result, out_dir)                        # monitor.json + monitor.html
    result.status()                                              # "ok" / "warn" / "alarm"

Modules: :mod:`~kizashi.monitoring.settings` (thresholds and why), :mod:`~.drift` (PSI, KS),
:mod:`~.reference`, :mod:`~.rank_ic` (rolling band), :mod:`~.alarms` (the rules),
:mod:`~.monitor` (the daily table), :mod:`~.page` (outputs).
"""

from kizashi.monitoring.alarms import KINDS, Alarm, evaluate_alarms, first_dates
from kizashi.monitoring.drift import (
    DistributionReference,
    daily_ks,
    daily_psi,
    ks_statistic,
    psi,
    psi_of_samples,
    quantile_edges,
)
from kizashi.monitoring.monitor import MonitorResult, result_to_dict, run_monitor
from kizashi.monitoring.page import (
    MONITOR_HTML,
    MONITOR_JSON,
    render_monitor_html,
    write_monitor_report,
)
from kizashi.monitoring.rank_ic import realized_rank_ic, rolling_rank_ic
from kizashi.monitoring.reference import MonitorReference, build_reference
from kizashi.monitoring.settings import MonitorSettings

__all__ = [
    "KINDS",
    "MONITOR_HTML",
    "MONITOR_JSON",
    "Alarm",
    "DistributionReference",
    "MonitorReference",
    "MonitorResult",
    "MonitorSettings",
    "build_reference",
    "daily_ks",
    "daily_psi",
    "evaluate_alarms",
    "first_dates",
    "ks_statistic",
    "psi",
    "psi_of_samples",
    "quantile_edges",
    "realized_rank_ic",
    "render_monitor_html",
    "result_to_dict",
    "rolling_rank_ic",
    "run_monitor",
    "write_monitor_report",
]
