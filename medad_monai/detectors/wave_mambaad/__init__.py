"""Wave-MambaAD: wavelet-driven state space model for multi-class unsupervised anomaly detection.

Zhang Q., Shao M., Chen X., Lv X., Xu K. Wave-MambaAD: Wavelet-driven State Space Model for
Multi-class Unsupervised Anomaly Detection. Official code: github.com/zhangqiao970914/Wave-MambaAD.

- :mod:`.network`: :class:`WaveMambaAD` and its training output :class:`WaveMambaADOutput`.
- :mod:`.blocks`: WDSS (eq. 4), HFSS (eq. 5), LFSS (eq. 6), Channel Mamba (eq. 7), DSE (eq. 8) and
  the Wavelet-Mamba module.
- :mod:`.loss`: :class:`WaveMambaADLoss` (multi-scale MSE).
- :mod:`.scoring`: :class:`WaveMambaADImageScore` (maximum of the average-pooled map).
"""

from .blocks import (
    DSE,
    HFSS,
    HFSS_SCANS,
    LFSS,
    WDSS,
    BiChannelSSM,
    ChannelMamba,
    ChannelMLP,
    WaveletMambaModule,
    channel_shuffle,
)
from .loss import WaveMambaADLoss
from .network import WaveMambaAD, WaveMambaADOutput
from .scoring import WaveMambaADImageScore

__all__ = [
    "DSE",
    "HFSS",
    "HFSS_SCANS",
    "LFSS",
    "WDSS",
    "BiChannelSSM",
    "ChannelMLP",
    "ChannelMamba",
    "WaveMambaAD",
    "WaveMambaADImageScore",
    "WaveMambaADLoss",
    "WaveMambaADOutput",
    "WaveletMambaModule",
    "channel_shuffle",
]
