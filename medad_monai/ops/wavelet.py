"""Single-level 2D Haar wavelet transform and its exact inverse.

Provides :func:`haar_dwt2d` and :func:`haar_iwt2d`, the DWT / IWT pair of the
Wave-MambaAD wavelet-based dual state space block (supplementary material): the
orthonormal Haar filters ``L = [1, 1] / sqrt(2)`` and ``H = [1, -1] / sqrt(2)``
split a feature map into one low band and three high bands,

- ``LL``: approximation (low-pass along both axes),
- ``LH``: horizontal detail (high-pass along the height axis, low-pass along the width axis),
- ``HL``: vertical detail (low-pass along the height axis, high-pass along the width axis),
- ``HH``: diagonal detail (high-pass along both axes),

with the sign conventions of PyWavelets: ``pywt.dwt2(x, "haar")`` returns
``(cA, (cH, cV, cD)) == (LL, (LH, HL, HH))``. Writing each 2 x 2 block as
``[[a, b], [c, d]]``::

    LL = (a + b + c + d) / 2        LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2        HH = (a - b - c + d) / 2

The filters do not overlap at stride 2, so both directions are implemented with
strided slicing and a reshape instead of a convolution: this is exact, differentiable,
and works for any floating dtype on any device. The transform is orthonormal, so
it preserves the energy (sum of squares) and the inverse reconstructs exactly up to
floating-point rounding. Height and width must be even; pad or resize odd-sized
maps before calling it (no padding mode is guessed here).
"""

from __future__ import annotations

import torch

__all__ = ["haar_dwt2d", "haar_iwt2d"]


def _check_4d(tensor: torch.Tensor, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(tensor.shape)}.")


def haar_dwt2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Single-level orthonormal 2D Haar transform.

    Args:
        x: feature map of shape (B, C, H, W) with even H and W.

    Returns:
        ``(ll, lh, hl, hh)``, each of shape (B, C, H / 2, W / 2): approximation,
        horizontal, vertical and diagonal detail (PyWavelets' cA, cH, cV, cD).

    Raises:
        TypeError: when ``x`` is not a tensor.
        ValueError: when ``x`` is not 4D or its height or width is odd.
    """
    _check_4d(x, "x")
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(
            f"x must have even height and width for the Haar transform, got H={height}, W={width}; "
            "pad or resize the input to even sizes first."
        )
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    # 1/sqrt(2) per axis gives 1/2 for the separable 2D filters.
    top_sum, top_diff = a + b, a - b
    bottom_sum, bottom_diff = c + d, c - d
    ll = (top_sum + bottom_sum) * 0.5
    lh = (top_sum - bottom_sum) * 0.5
    hl = (top_diff + bottom_diff) * 0.5
    hh = (top_diff - bottom_diff) * 0.5
    return ll, lh, hl, hh


def haar_iwt2d(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d`.

    Args:
        ll: approximation band, shape (B, C, h, w).
        lh: horizontal detail band, same shape as ``ll``.
        hl: vertical detail band, same shape as ``ll``.
        hh: diagonal detail band, same shape as ``ll``.

    Returns:
        The reconstructed feature map, shape (B, C, 2h, 2w).

    Raises:
        TypeError: when a band is not a tensor.
        ValueError: when a band is not 4D or the bands' shapes differ.
    """
    bands = {"ll": ll, "lh": lh, "hl": hl, "hh": hh}
    for name, band in bands.items():
        _check_4d(band, name)
    for name, band in bands.items():
        if band.shape != ll.shape:
            raise ValueError(f"{name} must have the shape of ll {tuple(ll.shape)}, got {tuple(band.shape)}.")
    sum_ll_lh, diff_ll_lh = ll + lh, ll - lh
    sum_hl_hh, diff_hl_hh = hl + hh, hl - hh
    a = (sum_ll_lh + sum_hl_hh) * 0.5
    b = (sum_ll_lh - sum_hl_hh) * 0.5
    c = (diff_ll_lh + diff_hl_hh) * 0.5
    d = (diff_ll_lh - diff_hl_hh) * 0.5
    batch, channels, height, width = ll.shape
    # (B, C, h, w, row-in-block, col-in-block) -> (B, C, h, row-in-block, w, col-in-block) -> (B, C, 2h, 2w)
    blocks = torch.stack((a, b, c, d), dim=-1).reshape(batch, channels, height, width, 2, 2)
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, 2 * height, 2 * width)
