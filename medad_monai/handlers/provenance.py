"""What a model was trained on, saved in its checkpoints and compared when the checkpoint is loaded."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from medad_monai.handlers.utils import sha256_file

__all__ = ["Provenance", "ProvenanceMismatchError"]

#: Entries a loaded record is compared on; the others (encoder weights, datalist) are informative at inference.
_COMPARED = ("modality", "preset", "image_size")


class ProvenanceMismatchError(ValueError):
    """A checkpoint was trained on other data or preprocessing than the run that loads it."""


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, so records saved and given in a config compare equal."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class Provenance:
    """The training record of a checkpoint, a stateful object for MONAI's checkpoint handlers.

    Put it in the ``save_dict`` of the savers (``"provenance": ...``) to record in every checkpoint the
    ``modality``, the modality ``preset`` options, the ``image_size``, the encoder's weights
    (``encoder.weights_source``, ``"unknown"`` for an encoder without one) and the SHA-256 of the
    training ``datalist``. Put one in the ``load_dict`` of a loader to compare: :meth:`load_state_dict`
    raises :class:`ProvenanceMismatchError` when the checkpoint's modality, preset or image size
    differs from this object's (entries given as ``None`` are not compared), or, when ``datalist`` is
    given (resuming training), when the training datalist changed. ``allow_mismatch`` turns the error
    into a logged warning. The loaded record is kept in :attr:`loaded`.

    Args:
        modality: the modality preset name (``"ct"``, ``"mri"``, ``"xray"``, ``"ultrasound"``).
        preset: the preset's options (e.g. ``{"window": "brain"}``).
        image_size: the network's input size.
        encoder: the network's encoder (its ``weights_source`` is recorded when saving).
        datalist: the training datalist file (its SHA-256 is recorded and compared).
        allow_mismatch: warn instead of raising on a mismatch.
    """

    def __init__(
        self,
        modality: str | None = None,
        preset: Mapping[str, Any] | None = None,
        image_size: Sequence[int] | None = None,
        encoder: nn.Module | None = None,
        datalist: str | os.PathLike | None = None,
        allow_mismatch: bool = False,
    ) -> None:
        self.modality = modality
        self.preset = None if preset is None else _plain(preset)
        self.image_size = None if image_size is None else _plain(image_size)
        self.encoder = encoder
        self.datalist_sha256 = None if datalist is None else sha256_file(datalist)
        self.allow_mismatch = allow_mismatch
        self.loaded: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)

    def state_dict(self) -> dict[str, Any]:
        """The record: ``modality``, ``preset``, ``image_size``, ``encoder_weights``, ``datalist_sha256``."""
        return {
            "modality": self.modality,
            "preset": self.preset,
            "image_size": self.image_size,
            "encoder_weights": str(getattr(self.encoder, "weights_source", "unknown")),
            "datalist_sha256": self.datalist_sha256,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Compare a saved record with this one; raise :class:`ProvenanceMismatchError` on a difference."""
        self.loaded = dict(state)
        expected = self.state_dict()
        keys = _COMPARED + (("datalist_sha256",) if self.datalist_sha256 is not None else ())
        differences = [
            f"{key} {state.get(key)!r} (this run: {expected[key]!r})"
            for key in keys
            if expected[key] is not None and _plain(state.get(key)) != expected[key]
        ]
        if not differences:
            return
        found = f"trained with {', '.join(differences)}"
        if self.allow_mismatch:
            self.logger.warning(
                f"checkpoint {found}: its thresholds may not apply; running anyway (allow_modality_mismatch)."
            )
            return
        advice = "use a checkpoint trained for this configuration"
        if self.datalist_sha256 is not None:
            advice += ", or train afresh (--resume false)"
        raise ProvenanceMismatchError(
            f"{found}; its thresholds and scores do not apply to this run: {advice}, or set allow_modality_mismatch "
            "to true (--allow_modality_mismatch true) to run anyway."
        )
