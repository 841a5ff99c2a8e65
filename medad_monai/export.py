"""Export a trained bundle's network to TorchScript (``models/model.ts``) and check it against the eager network.

:func:`export_torchscript` runs MONAI's ``monai.bundle.ckpt_export`` (trace mode) and then loads the
exported file with ``torch.jit.load`` and compares its anomaly maps with those of the eager network
that loaded the same checkpoint. What it adds to a bare ``ckpt_export`` call:

- the checkpoint key (``model``: the bundles save ``{"model": state_dict, "threshold": ...}``) and
  trace mode (scripting cannot compile the detectors' Python control flow);
- an input shape from the config's ``image_size`` (metadata.json describes the demo size only);
- one eager forward pass before tracing: the scan orders are built and cached on the first call,
  and without that pass ``torch.jit.trace``'s sanity check, which traces twice, sees two graphs;
- tracing on any device (the trace records the device; a model traced on CPU runs on CPU only);
- the comparison with the eager network, on the trace input and on other inputs and batch sizes.

A traced detector is only as general as its trace: the image size and the device are fixed, and so
is the chunk length of the pure-PyTorch selective scan, which the eager network adapts to the step
sizes of each input (:func:`medad_monai.ops.selective_scan._chunk_length`). While tracing, the scan
uses chunks of 16 steps in a segment-sum form whose exponents cannot overflow whatever the step sizes
(``_chunk_states_segsum``), so the exported model holds for inputs unlike the trace example;
:func:`export_torchscript` still checks it against the eager network on
inputs other than the trace example. On CUDA with mamba-ssm installed, export with
``MEDAD_SELECTIVE_SCAN_BACKEND=torch``: mamba-ssm's kernel cannot be traced.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser, ckpt_export

__all__ = ["ExportResult", "export_torchscript", "file_sha256", "load_bundle_network", "network_input_shape"]


@dataclass
class ExportResult:
    """What :func:`export_torchscript` wrote and how closely it matches the eager network.

    ``max_abs_diff`` is the largest absolute difference between the exported and the eager anomaly
    maps over every check input; ``map_max`` the largest eager map value, for scale.
    """

    path: Path
    device: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    map_max: float
    seconds: float
    sha256: str


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _parser(bundle_root: Path, config_file: Sequence[str], meta_file: str, overrides: Mapping[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(list(config_file))
    parser.read_meta(meta_file)
    parser["bundle_root"] = str(bundle_root)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def network_input_shape(parser: ConfigParser, net_id: str = "network_def", batch: int = 1) -> tuple[int, ...]:
    """``(batch, C, *image_size)``: channels from metadata.json's ``image`` input, size from the config's
    ``image_size`` (the network's size, which a command-line override may have changed) or else from
    metadata.json."""
    meta = parser.get("_meta_#network_data_format#inputs#image", {})
    channels = parser.get(f"{net_id}#in_channels", meta.get("num_channels", 3))
    size = parser.get("image_size", meta.get("spatial_shape"))
    if size is None:
        raise ValueError("cannot tell the network's input size: the config has no image_size and metadata.json no spatial_shape.")
    return (batch, int(channels), *(int(s) for s in size))


def load_bundle_network(
    parser: ConfigParser, ckpt_file: str | os.PathLike, key_in_ckpt: str = "model", net_id: str = "network_def",
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """The config's ``net_id`` with the checkpoint's weights (strict), in eval mode on ``device``."""
    network = parser.get_parsed_content(net_id, instantiate=True)
    checkpoint = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    state = checkpoint[key_in_ckpt] if key_in_ckpt else checkpoint
    network.load_state_dict(state, strict=True)
    return network.to(device).eval()


def _check_inputs(shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """Inputs other than the trace example: a batch of one and a batch of two, in the range of
    ImageNet-normalised images (about -2.1 to 2.6)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand((b, *shape[1:]), generator=generator) * 4.7 - 2.1 for b in (1, 2)]


def export_torchscript(
    bundle_root: str | os.PathLike,
    ckpt_file: str | os.PathLike | None = None,
    filepath: str | os.PathLike | None = None,
    config_file: str | Sequence[str] | None = None,
    meta_file: str | os.PathLike | None = None,
    key_in_ckpt: str = "model",
    net_id: str = "network_def",
    device: str | torch.device = "cpu",
    input_shape: Sequence[int] | None = None,
    check_inputs: Sequence[torch.Tensor] = (),
    atol: float = 1e-4,
    overrides: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export a bundle's trained network to TorchScript through ``monai.bundle.ckpt_export`` and check it.

    Args:
        bundle_root: the bundle folder.
        ckpt_file: the checkpoint; default ``<bundle_root>/models/model.pt``.
        filepath: the TorchScript file; default ``<bundle_root>/models/model.ts``.
        config_file: config(s) defining ``net_id``, stored in the TorchScript file; default
            ``<bundle_root>/configs/inference.json``.
        meta_file: default ``<bundle_root>/configs/metadata.json`` (stored in the file too).
        key_in_ckpt: key of the state dict in the checkpoint (``""`` for a bare state dict).
        net_id: config id of the network.
        device: device to trace on; the exported model runs on that device.
        input_shape: trace input shape; default ``(1, C, *image_size)`` (:func:`network_input_shape`).
        check_inputs: more network inputs ``(B, C, H, W)`` to compare on (e.g. preprocessed images);
            seeded random batches of one and two are always compared.
        atol: largest accepted absolute difference between exported and eager maps.
        overrides: config overrides, as on the command line (e.g. ``{"image_size": [256, 256]}``).

    Raises:
        FileNotFoundError: no checkpoint.
        RuntimeError: the exported model's maps differ from the eager ones by more than ``atol``.
    """
    start = time.perf_counter()
    root = Path(bundle_root).resolve()
    ckpt = Path(ckpt_file) if ckpt_file else root / "models" / "model.pt"
    out = Path(filepath) if filepath else root / "models" / "model.ts"
    configs = [str(c) for c in ([config_file] if isinstance(config_file, (str, os.PathLike)) else config_file or [])]
    configs = configs or [str(root / "configs" / "inference.json")]
    meta = str(meta_file) if meta_file else str(root / "configs" / "metadata.json")
    overrides = dict(overrides or {})
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}; train the bundle first or pass ckpt_file.")
    device = torch.device(device)
    parser = _parser(root, configs, meta, overrides)
    shape = tuple(input_shape) if input_shape else network_input_shape(parser, net_id)
    network = load_bundle_network(parser, ckpt, key_in_ckpt, net_id, device)
    inputs = [x.to(device) for x in (*check_inputs, *_check_inputs(shape, seed=0))]
    with torch.no_grad():
        expected = [network(x) for x in inputs]  # also builds the cached scan orders before tracing
    out.parent.mkdir(parents=True, exist_ok=True)
    # ckpt_export builds its own network and trace input (torch.rand) without a device: the default
    # device puts both on ``device``
    with torch.device(device):
        ckpt_export(
            net_id=net_id, filepath=str(out), ckpt_file=str(ckpt), meta_file=meta, config_file=configs,
            key_in_ckpt=key_in_ckpt, use_trace=True, input_shape=list(shape), bundle_root=str(root), **overrides,
        )
    exported = torch.jit.load(str(out), map_location=device)
    with torch.no_grad():
        diffs = [float((exported(x) - e).abs().max()) for x, e in zip(inputs, expected)]
    result = ExportResult(
        path=out, device=str(device), input_shape=shape, max_abs_diff=max(diffs),
        map_max=max(float(e.abs().max()) for e in expected), seconds=time.perf_counter() - start,
        sha256=file_sha256(out),
    )
    if result.max_abs_diff > atol:
        raise RuntimeError(
            f"the exported model {out} differs from the eager network by up to {result.max_abs_diff:.3g} "
            f"(> atol {atol:g}): the model does not trace faithfully; export it on another device or report the "
            "network that fails."
        )
    return result
