"""Load checkpoints of the official SP-Mamba implementation (github.com/Ray-RuiPan/SP-Mamba) into :class:`SPMamba`.

The official trainer saves ``{"net": state_dict, ...}`` (``ckpt.pth``) and the bare state dict
(``net.pth``, ``net_<epoch>.pth``) of its ``MAMBAAD`` module, whose parts are

- ``net_t``: timm's ``resnet34`` with ``features_only=True, out_indices=[1, 2, 3]``
  (torchvision's key names: ``conv1``, ``bn1``, ``layer1`` .. ``layer3``);
- ``mff_oce``: MambaAD's Half-FPN fusion (``conv1``/``bn1``, ``conv2``/``bn2`` stride-2 steps,
  ``conv21``/``bn21``, ``conv31``/``bn31`` laterals, ``convf``/``bnf``, ``bn_layer.{0,1,2}`` timm
  bottleneck blocks);
- ``net_s``: the decoder ``MambaUPNet``: ``coreset`` (``(H*W, K, C)`` prototypes, row-major grid
  positions), ``vis_conv`` (unused by its forward pass), and ``layers_up.{i}`` stages, each with
  ``upsample`` (``expand``, ``norm``; stages 1-3) and ``blocks.{j}`` holding ``smm_blocks.{k}``
  (``ln_1`` and ``self_attention``, an SS2D with ``in_proj``, ``conv2d``, ``x_proj_weight``,
  ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``, ``out_norm``, ``out_proj`` and the scan
  order ``scans.index_flat`` / ``scans.index_flat_inv``) and the convolution branch ``conv1b5``,
  ``conv55``, ``conv1a5`` (5 x 5 path), ``conv1b3``, ``conv77``, ``conv1a3`` (7 x 7 path), ``conv33``
  (unused by its forward pass) and ``finalconv11``.

Every key is either mapped onto :class:`SPMamba` or, for the three kinds its forward pass never
reads (``vis_conv``, ``conv33``, the scan orders), checked and dropped: the scan orders must equal
this package's Circular-Hilbert orders, else the checkpoint was trained with other scans.
An unknown or missing key raises a ``ValueError`` naming it.

With the network arguments from :func:`official_network_args` (K from the checkpoint, the official
trainer's map weights ``prototype_weight`` 0.5 and ``reconstruction_weight`` 1/9) the converted
network gives the official trainer's anomaly maps.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from medad_monai.detectors.sp_mamba.network import SPMamba
from medad_monai.ops.scan_orders import scan_order

__all__ = [
    "OFFICIAL_MAP_WEIGHTS",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_network_args",
]

#: The official trainer's anomaly map: ``0.5 * up(D)`` plus its evaluator's sum over the three scales divided by 9.
OFFICIAL_MAP_WEIGHTS = {"prototype_weight": 0.5, "reconstruction_weight": 1.0 / 9.0, "smoothing_sigma": 4.0}
#: Where the converted encoder's weights came from (recorded as the encoder's ``weights_source``).
OFFICIAL_WEIGHTS_SOURCE = "official SP-Mamba checkpoint (converted)"

# official decoder block keys -> ours, after "net_s.layers_up.{i}.blocks.{j}."
_SSM_KEYS = {
    "ln_1.weight": "norm.weight",
    "ln_1.bias": "norm.bias",
    "self_attention.in_proj.weight": "mixer.in_proj.weight",
    "self_attention.conv2d.weight": "mixer.conv.weight",
    "self_attention.conv2d.bias": "mixer.conv.bias",
    "self_attention.x_proj_weight": "mixer.ssm.x_proj_weight",
    "self_attention.dt_projs_weight": "mixer.ssm.dt_proj_weight",
    "self_attention.dt_projs_bias": "mixer.ssm.dt_proj_bias",
    "self_attention.A_logs": "mixer.ssm.a_log",
    "self_attention.Ds": "mixer.ssm.d_skip",
    "self_attention.out_norm.weight": "mixer.out_norm.weight",
    "self_attention.out_norm.bias": "mixer.out_norm.bias",
    "self_attention.out_proj.weight": "mixer.out_proj.weight",
}
# the convolution branch: (official module, our path); branch 0 is the 5 x 5 path, branch 1 the 7 x 7 path
_CONV_KEYS = {
    "conv1b5.0": "local.0.0.0",
    "conv55.0": "local.0.1.0",
    "conv1a5.0": "local.0.2.0",
    "conv1b3.0": "local.1.0.0",
    "conv77.0": "local.1.1.0",
    "conv1a3.0": "local.1.2.0",
    "finalconv11": "fuse",
}
_FUSION_KEYS = {
    "conv1": "down.0.conv",
    "bn1": "down.0.adn.N",
    "conv2": "down.1.conv",
    "bn2": "down.1.adn.N",
    "conv21": "lateral.0.conv",
    "bn21": "lateral.0.adn.N",
    "conv31": "lateral.1.conv",
    "bn31": "lateral.1.adn.N",
    "convf": "mix.conv",
    "bnf": "mix.adn.N",
}
_BLOCK = re.compile(r"net_s\.layers_up\.(\d+)\.blocks\.(\d+)\.(.+)")
_SSM = re.compile(r"smm_blocks\.(\d+)\.(.+)")
_UPSAMPLE = re.compile(r"net_s\.layers_up\.(\d+)\.upsample\.(.+)")


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model state dict of an official checkpoint: ``ckpt.pth`` (``{"net": ...}``) or ``net.pth``,
    with a ``module.`` prefix (distributed training) removed."""
    state = checkpoint.get("net", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise ValueError(f"an official SP-Mamba checkpoint holds a state dict, got {type(state).__name__}.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def official_network_args(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`SPMamba` arguments that rebuild the official network of ``checkpoint`` and its anomaly maps.

    Read from the checkpoint: the prototype grid and count (``net_s.coreset``, ``(H*W, K, C)``), the
    image size (32 x the grid), the decoder depths (Mamba layers per stage) and the encoder depth
    (34, the official choice, or 18, from the blocks of ``layer1``). Added: the official trainer's
    map weights :data:`OFFICIAL_MAP_WEIGHTS` and 8 Circular-Hilbert directions.
    """
    state = _unwrap(checkpoint)
    if "net_s.coreset" not in state:
        raise ValueError("not an official SP-Mamba checkpoint: the key 'net_s.coreset' (the prototypes) is missing.")
    positions, num_prototypes, _ = state["net_s.coreset"].shape
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"net_s.coreset has {positions} grid positions, not a square grid.")
    depths: dict[int, int] = {}
    for key in state:
        match = _BLOCK.fullmatch(key)
        ssm = _SSM.fullmatch(match.group(3)) if match else None
        if ssm and ssm.group(2) == "ln_1.weight":
            depths[int(match.group(1))] = depths.get(int(match.group(1)), 0) + 1
    if sorted(depths) != [0, 1, 2, 3]:
        raise ValueError(f"expected four decoder stages net_s.layers_up.0-3 with Mamba layers, found {sorted(depths)}.")
    layer1_blocks = {key.split(".")[2] for key in state if key.startswith("net_t.layer1.")}
    encoder_depth = {2: 18, 3: 34}.get(len(layer1_blocks))
    if encoder_depth is None:
        raise ValueError(f"net_t.layer1 has {len(layer1_blocks)} blocks: not a ResNet18 (2) or ResNet34 (3) encoder.")
    return {
        "image_size": (32 * side, 32 * side),
        "encoder_depth": encoder_depth,
        "decoder_depths": tuple(depths[i] for i in range(4)),
        "scan": "circular_hilbert",
        "num_directions": 8,
        "num_prototypes": int(num_prototypes),
        **OFFICIAL_MAP_WEIGHTS,
    }


def _our_key(key: str) -> str | None:
    """Our key for an official key; ``None`` for keys that are checked and dropped; raises for unknown keys."""
    if key.startswith("net_t."):
        rest = key[len("net_t.") :]
        head, _, tail = rest.partition(".")
        if head == "conv1":
            return f"encoder.stem.0.{tail}"
        if head == "bn1":
            return f"encoder.stem.1.{tail}"
        layer = re.fullmatch(r"layer([123])", head)
        if layer:
            return f"encoder.layers.{int(layer.group(1)) - 1}.{tail}"
    elif key.startswith("mff_oce."):
        rest = key[len("mff_oce.") :]
        if rest.startswith("bn_layer."):
            return "bottleneck.fuse." + rest[len("bn_layer.") :]
        head, _, tail = rest.partition(".")
        if head in _FUSION_KEYS:
            return f"bottleneck.{_FUSION_KEYS[head]}.{tail}"
    elif key == "net_s.coreset":
        return "prototypes.prototypes"
    elif key.startswith("net_s.vis_conv."):
        return None
    elif match := _UPSAMPLE.fullmatch(key):
        return f"upsamples.{int(match.group(1)) - 1}.{match.group(2)}"
    elif match := _BLOCK.fullmatch(key):
        stage, block, rest = match.groups()
        prefix = f"stages.{stage}.{block}."
        if ssm := _SSM.fullmatch(rest):
            if ssm.group(2) in ("self_attention.scans.index_flat", "self_attention.scans.index_flat_inv"):
                return None
            if ssm.group(2) in _SSM_KEYS:
                return f"{prefix}mamba.{ssm.group(1)}.{_SSM_KEYS[ssm.group(2)]}"
        elif rest.startswith("conv33."):
            return None
        else:
            module, _, tail = rest.rpartition(".")
            if module in _CONV_KEYS:
                return f"{prefix}{_CONV_KEYS[module]}.{tail}"
    raise ValueError(f"unknown key {key!r}: not part of the official SP-Mamba model (MAMBAAD with MambaUPNet).")


def _check_scan_order(key: str, value: torch.Tensor) -> None:
    """The official scan order of a stage (``index_flat``, or its inverse) must be this package's Circular-Hilbert order."""
    length = value.numel()
    side = math.isqrt(length)
    order = scan_order(side, side, "circular_hilbert")
    expected = order if key.endswith("index_flat") else torch.argsort(order)
    if side * side != length or not torch.equal(value.reshape(-1).long().cpu(), expected):
        raise ValueError(
            f"{key} is not the Circular-Hilbert scan order of a {side} x {side} grid: the checkpoint was trained "
            "with another scan type (the official code also offers 'scan', 'sweep', 'zigzag', 'zorder', 'hilbert')."
        )


def convert_official_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Convert an official SP-Mamba state dict (or ``{"net": state_dict}``) to :class:`SPMamba`'s keys.

    Returns a state dict that ``SPMamba(**official_network_args(checkpoint)).load_state_dict(...,
    strict=True)`` accepts: every official key mapped, the unused ones checked and dropped, the
    prototypes reshaped from ``(H*W, K, C)`` to ``(K, C, H, W)``, and the encoder marked as
    carrying pretrained batch-norm statistics.

    Raises:
        ValueError: a key that is not in the official model, a key it requires that is missing, a
            scan order that is not Circular-Hilbert, or a tensor whose shape does not fit.
    """
    state = _unwrap(checkpoint)
    args = official_network_args(state)
    reference = SPMamba(**args, encoder_weights="random").state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = _our_key(key)
        if ours is None:
            if ".scans.index_flat" in key:
                _check_scan_order(key, value)
            continue
        if ours == "prototypes.prototypes":
            positions, k, c = value.shape
            side = math.isqrt(positions)
            value = value.permute(1, 2, 0).reshape(k, c, side, side)
        if ours not in reference:
            raise ValueError(f"official key {key!r} maps to {ours!r}, which the network built from it does not have.")
        if tuple(value.shape) != tuple(reference[ours].shape):
            raise ValueError(
                f"official key {key!r} has shape {tuple(value.shape)}, but {ours!r} needs {tuple(reference[ours].shape)}."
            )
        converted[ours] = value.detach().clone()
    converted["encoder.bn_calibrated"] = torch.tensor(True)
    converted["encoder._extra_state"] = torch.tensor(list(OFFICIAL_WEIGHTS_SOURCE.encode("utf-8")), dtype=torch.uint8)
    missing = sorted(set(reference) - set(converted))
    if missing:
        raise ValueError(
            f"the checkpoint lacks {len(missing)} entries of the official model, e.g. {missing[:5]} (our names): "
            "is it a complete MAMBAAD state dict?"
        )
    return converted


def load_official_checkpoint(path: str | os.PathLike, **overrides: Any) -> SPMamba:
    """Build :class:`SPMamba` for an official checkpoint file and load its weights.

    Args:
        path: ``ckpt.pth`` or ``net.pth`` written by the official trainer.
        overrides: :class:`SPMamba` arguments replacing those of :func:`official_network_args`
            (e.g. ``prototype_weight=1.0`` for the paper's alpha instead of the official trainer's 0.5).

    Returns:
        The network in ``eval()`` mode, whose ``net(image)`` is the official trainer's anomaly map.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    net = SPMamba(**{**official_network_args(checkpoint), "encoder_weights": "random", **overrides})
    net.load_state_dict(convert_official_state_dict(checkpoint), strict=True)
    return net.eval()
