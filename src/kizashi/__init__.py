"""kizashi (兆し): deep learning on market time series, from raw price bars to
walk-forward-validated return signals."""

__version__ = "0.1.0"
