"""Peers family: the stock against its neighbours in the per-day correlation graph.

The graph of day t (``kizashi.features.graph``: each stock's top-k most correlated stocks over the
trailing window, ending at t) names peers that sector labels miss; the neighbour table
gives, per (date, code), the neighbours' mean return that day. From it:

* ``peer_return_{w}d``: the neighbours' mean return summed over the last ``w`` days
  (peers' moves that the stock may follow with a lag);
* ``peer_weighted_return_1d``: the correlation-weighted mean return of the neighbours;
* ``peer_residual_return_{w}d``: the stock's return minus its neighbours', summed over
  ``w`` days (the idiosyncratic part of a move, which tends to revert);
* ``peer_residual_zscore_5d``: the 5-day residual over its own 20-day dispersion;
* ``peer_count``: how many neighbours the stock has today.

Only built when graphs are (``graph.enabled``); every input is known at t's close.
"""

from __future__ import annotations

import math

from kizashi.features.expressions import RET, c, safe_div, ts_std, ts_sum
from kizashi.features.spec import FeatureContext, FeatureSpec
from kizashi.features.graph import NEIGHBOR_COUNT, NEIGHBOR_RETURN, NEIGHBOR_WEIGHTED_RETURN

FAMILY = "peers"
PEER_RETURN_WINDOWS = (5, 10, 20)
RESIDUAL_WINDOWS = (1, 3, 5, 10, 20)


def peers_family(ctx: FeatureContext) -> list[FeatureSpec]:
    if not ctx.has_graph:
        return []
    peer = c(NEIGHBOR_RETURN)
    residual = c(RET) - peer
    specs = [
        FeatureSpec("peer_return_1d", peer, FAMILY, 0, masked=False),
        FeatureSpec("peer_weighted_return_1d", c(NEIGHBOR_WEIGHTED_RETURN), FAMILY, 0, masked=False),
        FeatureSpec("peer_count", c(NEIGHBOR_COUNT).fill_null(0.0), FAMILY, 0, masked=False),
    ]
    for w in PEER_RETURN_WINDOWS:
        specs.append(FeatureSpec(f"peer_return_{w}d", ts_sum(peer, w), FAMILY, w - 1))
    for w in RESIDUAL_WINDOWS:
        expr = residual if w == 1 else ts_sum(residual, w)
        specs.append(FeatureSpec(f"peer_residual_return_{w}d", expr, FAMILY, w))
    dispersion = ts_std(residual, 20) * math.sqrt(5.0)
    specs.append(FeatureSpec("peer_residual_zscore_5d", safe_div(ts_sum(residual, 5), dispersion), FAMILY, 20))
    return specs
