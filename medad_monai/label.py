"""MONAI Label serving of the anomaly-detection bundles.

MONAI Label's ``monaibundle`` sample app loads every bundle from ``<app>/model/<name>/`` and reads only
``configs/inference.json`` and ``configs/metadata.json``. :func:`make_label_bundles` writes, from a
trained bundle, two folders it can load without overlays:

- ``<name>``: 2D images (the bundle's ``inference.json`` + ``label.json``);
- ``<name>_volume``: 3D volumes slice by slice (``inference.json`` + ``label.json`` +
  ``inference_volume.json``), merged into one self-contained ``inference.json``.

``label.json`` ends the postprocessing with :class:`AnomalyLabeld`: the returned label is the binary
anomaly mask in the input's geometry (no channel axis; label ``anomaly`` = 1, so viewers overlay it as a
segment), or the float anomaly map when the request asks for it (``{"label_output": "map"}``), and the
result JSON carries the image score, both thresholds and whether the image is called anomalous.

Start the server with :data:`app` as the uvicorn app, which first installs :func:`install_compat`
(MONAI Label 0.8.5 under pydicom 3 and CPU torch)::

    monailabel start_server --app <app> --studies <images> --uvicorn_app medad_monai.label:app \\
        --conf models sp_mamba,sp_mamba_volume --conf zoo_source github --conf sam2 false --conf skip_trainers true
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medad_monai.transforms.post import read_threshold

__all__ = ["AnomalyLabeld", "install_compat", "make_label_bundles"]

#: Label value of the anomaly mask in the returned label, as announced to MONAI Label.
ANOMALY_LABEL = 1


class AnomalyLabeld(MapTransform):
    """Choose what MONAI Label returns as the label, and put the score and thresholds in its result JSON.

    Reads the anomaly map ``keys`` (``(1, *spatial)``), the mask ``mask_key`` and the image score
    ``score_key`` (from ``ImageScored`` and ``ThresholdAnomalyMapd``). Writes into ``keys`` the mask
    (uint8, values 0 / :data:`ANOMALY_LABEL`) without its channel axis, or the float map when
    ``data[request_key] == "map"`` (a request parameter), and writes ``data["result"]``: ``score``,
    ``threshold``, ``pixel_threshold``, ``anomalous``, ``mask_voxels``, ``map_max``, ``label_output``.

    Args:
        keys: key of the anomaly map (MONAI Label writes this key as the label).
        threshold_file: the thresholds JSON written by training.
        mask_key: key of the binary mask.
        score_key: key of the image score.
        request_key: request parameter choosing ``"mask"`` (default) or ``"map"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold_file: str | os.PathLike,
        mask_key: str = "pred_mask",
        score_key: str = "score",
        request_key: str = "label_output",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold_file, self.mask_key, self.score_key, self.request_key = threshold_file, mask_key, score_key, request_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        output = str(d.get(self.request_key) or "mask")
        if output not in ("mask", "map"):
            raise ValueError(f"request parameter {self.request_key!r} must be 'mask' or 'map', got {output!r}.")
        for key in self.key_iterator(d):
            amap, mask = d[key], d[self.mask_key]
            score = float(d[self.score_key])
            threshold = read_threshold(self.threshold_file, "threshold")
            d["result"] = {
                **(d.get("result") or {}),
                "score": score,
                "threshold": threshold,
                "pixel_threshold": read_threshold(self.threshold_file, "pixel_threshold"),
                "anomalous": score > threshold,
                "mask_voxels": int(torch.as_tensor(mask).sum()),
                "map_max": float(torch.as_tensor(amap).max()),
                "label_output": output,
            }
            label = amap.float() if output == "map" else (mask > 0).to(torch.uint8) * ANOMALY_LABEL
            d[key] = label[0]  # (1, *spatial) -> (*spatial): the label has the image's shape
            d["result_dtype"] = np.float32 if output == "map" else np.uint8
        return d


def _merged_config(files: list[Path]) -> dict:
    """The configs merged as ``monai.bundle run`` merges them (later files override; ``a#b`` keys set nested entries)."""
    return ConfigParser.load_config_files([str(f) for f in files])


def make_label_bundles(
    bundle_root: str | os.PathLike, model_dir: str | os.PathLike, name: str | None = None
) -> dict[str, Path]:
    """Write ``<model_dir>/<name>`` (2D) and ``<model_dir>/<name>_volume`` (3D): self-contained copies of a
    trained bundle that MONAI Label's ``monaibundle`` app loads; returns ``{model name: folder}``.

    Each copy holds the bundle's ``models/`` (weights, thresholds), ``docs``, ``LICENSE``, a merged
    ``configs/inference.json`` and a ``configs/metadata.json`` whose output describes the returned label
    (background 0, anomaly 1) and whose input's spatial shape has the served dimension (MONAI Label takes
    the model's dimension from it).
    """
    root = Path(bundle_root)
    configs = root / "configs"
    metadata = json.loads((configs / "metadata.json").read_text())
    name = name or metadata.get("name", root.name)
    written = {}
    for variant, extra in ((name, []), (f"{name}_volume", [configs / "inference_volume.json"])):
        target = Path(model_dir) / variant
        if target.exists():
            shutil.rmtree(target)
        (target / "configs").mkdir(parents=True)
        shutil.copytree(root / "models", target / "models", ignore=shutil.ignore_patterns("last_checkpoint*", ".gitkeep"))
        for item in ("docs", "LICENSE"):
            if (root / item).is_dir():
                shutil.copytree(root / item, target / item)
            elif (root / item).is_file():
                shutil.copy(root / item, target / item)
        config = _merged_config([configs / "inference.json", configs / "label.json", *extra])
        (target / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
        meta = json.loads(json.dumps(metadata))
        spatial_dims = 3 if extra else 2
        inputs = meta["network_data_format"]["inputs"]["image"]
        inputs["spatial_shape"] = ["*"] * spatial_dims
        inputs["num_channels"] = 1
        inputs["description"] = "the image as read from its file (MONAI Label sends the file), before preprocessing"
        outputs = meta["network_data_format"]["outputs"]["pred"]
        outputs.update({"type": "image", "format": "segmentation", "num_channels": 1, "dtype": "uint8",
                        "value_range": [0, ANOMALY_LABEL], "spatial_shape": ["*"] * spatial_dims,
                        "channel_def": {"0": "background", str(ANOMALY_LABEL): "anomaly"}})
        meta["name"] = variant
        (target / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        written[variant] = target
    return written


# ----------------------------------------------------------------------------------------------
# MONAI Label 0.8.5 on pydicom 3 and CPU torch
# ----------------------------------------------------------------------------------------------


def install_compat() -> None:
    """Let MONAI Label 0.8.5 start with this project's dependencies; idempotent.

    - pydicom-seg 0.4.1 (imported by MONAI Label's datastore) imports
      ``pydicom._storage_sopclass_uids``, which pydicom 3 removed; the SOP class UIDs it wants are in
      ``pydicom.uid``, so that module is registered under the old name.
    - PyPI's torchvision 0.28 wheel is built for CUDA torch: on the CPU build of torch 2.13 its C++
      operators do not load and ``import torchvision`` fails while registering their meta kernels
      ("operator torchvision::nms does not exist"). MONAI Label imports only
      ``torchvision.utils`` (image grids for TensorBoard); the operators' schemas are declared before
      the import so that it succeeds (calling a torchvision operator still fails).
    """
    import pydicom
    import pydicom.uid

    if "pydicom._storage_sopclass_uids" not in sys.modules:
        module = types.ModuleType("pydicom._storage_sopclass_uids")
        module.__dict__.update({k: v for k, v in vars(pydicom.uid).items() if isinstance(v, pydicom.uid.UID)})
        sys.modules["pydicom._storage_sopclass_uids"] = module
        pydicom._storage_sopclass_uids = module
    _declare_torchvision_ops()


#: Schemas of torchvision's C++ operators (torchvision/csrc/ops/*.cpp), declared when they did not load.
_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_torchvision_library = None


def _declare_torchvision_ops() -> None:
    """Declare torchvision's operator schemas when torchvision is installed but its C++ operators do not load."""
    global _torchvision_library
    if _torchvision_library is not None or "torchvision" in sys.modules:
        return
    from importlib.util import find_spec

    spec = find_spec("torchvision")
    if spec is None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018  (already registered: nothing to do)
        return
    except (AttributeError, RuntimeError):
        pass
    import glob

    libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    try:
        if libraries:
            torch.ops.load_library(libraries[0])
            torch.ops.torchvision.nms  # noqa: B018
            return
    except (OSError, RuntimeError, AttributeError):
        pass
    _torchvision_library = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_OPS:
        _torchvision_library.define(schema)


def __getattr__(name: str) -> Any:
    """``app``: MONAI Label's FastAPI app, created after :func:`install_compat` (``--uvicorn_app medad_monai.label:app``)."""
    if name == "app":
        install_compat()
        from monailabel.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
