"""Helpers shared by the detectors' networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["plain_network_input"]


def plain_network_input(image: torch.Tensor, image_size: Sequence[int], network: str) -> torch.Tensor:
    """Check that ``image`` is ``(B, C, *image_size)`` and return it as a plain tensor.

    Tensor subclasses (e.g. MONAI's ``MetaTensor``) add per-op overhead inside a network, so the
    detectors run on the plain tensor.

    Raises:
        ValueError: naming ``network``, the expected and the given shape.
    """
    if image.ndim != 4 or tuple(image.shape[2:]) != tuple(image_size):
        raise ValueError(
            f"{network} expects images of shape (B, C, {image_size[0]}, {image_size[1]}), "
            f"got {tuple(image.shape)}: resize inputs to the network's image_size."
        )
    return image.as_subclass(torch.Tensor)
