"""Trainer handler that calibrates a randomly initialised encoder's batch-norm statistics once."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

__all__ = ["CalibratableEncoder", "EncoderCalibration"]


@runtime_checkable
class CalibratableEncoder(Protocol):
    """What :class:`EncoderCalibration` needs of an encoder (e.g. :class:`~medad_monai.networks.blocks.ResNetFeatureEncoder`).

    ``bn_calibrated``: a boolean tensor, true once the statistics were estimated or pretrained
    weights were loaded. ``calibrate_batch_norm(images)``: estimate them on batches ``(B, C, H, W)``.
    """

    bn_calibrated: torch.Tensor

    def calibrate_batch_norm(self, images: Iterable[torch.Tensor]) -> None: ...


class EncoderCalibration:
    """At ``STARTED``, estimate the encoder's batch-norm statistics on normal training images.

    Runs only when the encoder has not been calibrated and loaded no pretrained
    weights (``encoder.bn_calibrated`` is false). Attach it after a resume
    handler: a resumed run restores the calibrated statistics from the
    checkpoint and skips this step. See :meth:`ResNetFeatureEncoder.calibrate_batch_norm`.

    Args:
        encoder: any module offering ``bn_calibrated`` and ``calibrate_batch_norm``
            (:class:`CalibratableEncoder`), e.g. ``network_def.encoder``.
        data_loader: loader of training batches (dicts with ``image_key``).
        num_batches: use at most this many batches (``None``: the whole loader).
        image_key: key of the images in a batch.
    """

    def __init__(
        self, encoder: CalibratableEncoder, data_loader: DataLoader, num_batches: int | None = None, image_key: str = "image"
    ) -> None:
        if not isinstance(encoder, CalibratableEncoder):
            raise TypeError(
                f"encoder must offer 'bn_calibrated' and 'calibrate_batch_norm(images)', got {type(encoder).__name__}."
            )
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
