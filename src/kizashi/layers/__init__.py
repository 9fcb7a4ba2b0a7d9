"""Reusable neural-network blocks (fixed dimensions at construction; shapes in docstrings):
GRN/VSN (``grn``), TFT temporal block (``tft``), FAN/SAN (``fan``), FreqDropout
(``freq_dropout``), graph attention (``gat``) and per-horizon heads (``heads``)."""

from kizashi.layers.fan import FrequencyAdaptiveNormalization, SliceAdaptiveNormalization
from kizashi.layers.freq_dropout import FreqDropout
from kizashi.layers.gat import GraphAttentionBlock, TemperedGATv2Conv
from kizashi.layers.grn import GateAddNorm, GatedResidualNetwork, VariableSelectionNetwork
from kizashi.layers.heads import HorizonHeads, LayerScale
from kizashi.layers.tft import TemporalBlock

__all__ = [
    "FreqDropout",
    "FrequencyAdaptiveNormalization",
    "GateAddNorm",
    "GatedResidualNetwork",
    "GraphAttentionBlock",
    "HorizonHeads",
    "LayerScale",
    "SliceAdaptiveNormalization",
    "TemperedGATv2Conv",
    "TemporalBlock",
    "VariableSelectionNetwork",
]
