"""The anomaly detectors, one package each: ``network.py``, ``blocks.py``, ``loss.py``, ``scoring.py``.

The detector contract, which MONAI inferers, post-transforms, the bundles, MONAI Label and MONAI
Deploy rely on:

- A detector is an ``nn.Module`` built from plain config arguments (its paper's defaults).
- ``eval()`` mode: ``net(image)`` with ``image`` ``(B, C, H, W)`` (the network's ``image_size``,
  normalised as :func:`medad_monai.transforms.detector_input_transforms` prepares it) returns the
  pixel anomaly map ``(B, 1, H, W)``, higher meaning more anomalous.
- ``train()`` mode: ``net(image)`` returns the typed output declared in the detector's
  ``network.py`` (e.g. :class:`SPMambaOutput`, :class:`WaveMambaADOutput`); the detector's loss in
  ``loss.py`` takes it as ``loss(output, target)`` (``target`` ignored: training images are all
  normal), which is how MONAI's ``SupervisedTrainer`` calls a loss.
- A frozen pretrained encoder is exposed as ``net.encoder``; if it offers
  ``calibrate_batch_norm``, :class:`medad_monai.handlers.EncoderCalibration` can calibrate it.
- Optional: a detector whose paper scores images on another map than the one it localises with
  offers ``anomaly_and_score_maps(image)`` (``eval()`` mode): the pixel map ``net(image)`` returns and
  the map its image scorer pools, both ``(B, 1, H, W)``, from one pass (e.g.
  :meth:`UMIADEGMF.anomaly_and_score_maps`). The inferers that return the map image scores are computed
  on (``network_map_key`` of :class:`medad_monai.inferers.ImageInferer`,
  :class:`medad_monai.inferers.ScoreMapInferer`) call it; without it, that map is the pixel map.
- ``scoring.py`` holds an image scorer (``<Name>ImageScore``) whose defaults are the paper's,
  called on maps ``(B, 1, H, W)`` and returning scores ``(B,)``.
"""

from .sp_mamba import SPMamba, SPMambaImageScore, SPMambaLoss, SPMambaOutput
from .umiad_egmf import UMIADEGMF, UMIADEGMFImageScore, UMIADEGMFLoss, UMIADEGMFOutput
from .wave_mambaad import WaveMambaAD, WaveMambaADImageScore, WaveMambaADLoss, WaveMambaADOutput

__all__ = [
    "SPMamba",
    "SPMambaImageScore",
    "SPMambaLoss",
    "SPMambaOutput",
    "UMIADEGMF",
    "UMIADEGMFImageScore",
    "UMIADEGMFLoss",
    "UMIADEGMFOutput",
    "WaveMambaAD",
    "WaveMambaADImageScore",
    "WaveMambaADLoss",
    "WaveMambaADOutput",
]
