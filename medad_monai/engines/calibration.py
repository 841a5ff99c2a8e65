"""Trainer handler that calibrates a randomly initialised encoder's batch-norm statistics once."""

from __future__ import annotations

import itertools
import logging

from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

from medad_monai.networks.blocks.encoder import ResNetFeatureEncoder

__all__ = ["EncoderCalibration"]


class EncoderCalibration:
    """At ``STARTED``, estimate the encoder's batch-norm statistics on normal training images.

    Runs only when the encoder has not been calibrated and loaded no pretrained
    weights (``encoder.bn_calibrated`` is false). Attach it after a resume
    handler: a resumed run restores the calibrated statistics from the
    checkpoint and skips this step. See :meth:`ResNetFeatureEncoder.calibrate_batch_norm`.

    Args:
        encoder: the detector's encoder (e.g. ``network_def.encoder``).
        data_loader: loader of training batches (dicts with ``image_key``).
        num_batches: use at most this many batches (``None``: the whole loader).
        image_key: key of the images in a batch.
    """

    def __init__(
        self, encoder: ResNetFeatureEncoder, data_loader: DataLoader, num_batches: int | None = None, image_key: str = "image"
    ) -> None:
        self.encoder = encoder
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.image_key = image_key
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if bool(self.encoder.bn_calibrated):
            return
        batches = itertools.islice(self.data_loader, self.num_batches)
        self.encoder.calibrate_batch_norm(batch[self.image_key] for batch in batches)
        self.logger.info("calibrated the encoder's batch-norm statistics on normal training images.")
