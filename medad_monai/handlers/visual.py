"""Visual evaluation report: per-image panels and image-level ROC / PR curves as PNG (and TensorBoard) images."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from medad_monai.handlers.utils import decollated_output, gather_1d, item_filename, per_item_scalars, resolve_thresholds
from medad_monai.metrics.functional import average_precision, image_auroc
from medad_monai.transforms.common import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["VisualReportHandler", "denormalize_image"]

# The statistics the frozen ImageNet encoders normalise their input with (see CONTRIBUTING: detector input).


def denormalize_image(image: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """
    Undo the input normalisation of one image for display.

    Args:
        image: array of shape (C, H, W) with C = 1 or 3.
        mean: per-channel mean (length C or 1) the image was normalised with; None rescales min-max instead.
        std: matching per-channel std; None together with ``mean``.

    Returns:
        (H, W) or (H, W, 3) array in [0, 1]; values outside are clipped, for display only.

    Raises:
        ValueError: for another channel count or mean/std lengths that do not match it.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (C, H, W) with C 1 or 3, got {image.shape}.")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together (or both None for min-max scaling).")
    if mean is None:
        low, high = float(image.min()), float(image.max())
        out = (image - low) / (high - low) if high > low else np.zeros_like(image)
    else:
        for arg, value in (("mean", mean), ("std", std)):
            if len(value) not in (1, image.shape[0]):
                raise ValueError(f"{arg} has {len(value)} values for an image with {image.shape[0]} channels.")
        scale, shift = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (std, mean))
        out = image * scale + shift
    out = np.clip(out, 0.0, 1.0)
    return out[0] if out.shape[0] == 1 else out.transpose(1, 2, 0)


def _figure_rgb(fig: Figure) -> np.ndarray:
    """Render ``fig`` and return its pixels as a (H, W, 3) uint8 array (for TensorBoard)."""
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _safe_stem(filename: str | None) -> str:
    if filename is None:
        return ""
    name = Path(filename).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".npy", ".npz", ".mha", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return "_" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class VisualReportHandler:
    """
    Writes, at the end of each evaluation, a PNG panel per selected image and image-level ROC / PR curves.

    Panel columns: the input (de-normalised with ``mean``/``std``), the ground-truth mask (when the output has
    ``mask_key``), the anomaly map as a heat-map over the input, and the thresholded map (``pred >=
    pixel_threshold``, ground truth outlined in red) when a threshold source is given. Heat-maps share one colour
    range over all panels of an evaluation (``map_range``, default: the min and max of the shown maps), so
    colours compare across images. The title gives the file name, label, score and, with a threshold source, the
    decision ``score >= threshold``.

    Selection is deterministic: the first ``num_images`` normal and the first ``num_images`` abnormal images in
    evaluation order (use an unshuffled loader). Files: ``output_dir/panels/<index>_<file stem>.png``
    (``index`` is the image's position in the evaluation), ``output_dir/roc_curve.png`` and
    ``output_dir/pr_curve.png``; each evaluation overwrites the files of the same names (a re-run replaces
    its report; panels of a previous run with other images are left in place). With ``summary_writer``, the same
    images go to TensorBoard under ``<tag_name>/...`` at step ``engine.state.epoch``.

    Example (bundle config, in the test evaluator's ``val_handlers``)::

        {"_target_": "medad_monai.handlers.VisualReportHandler", "output_dir": "@output_dir",
         "threshold_source": "$@bundle_root + '/models/threshold.json'", "num_images": 4}

    Args:
        output_dir: directory for the PNG files (created if needed).
        threshold_source: calibrated thresholds (see :func:`~medad_monai.handlers.utils.resolve_thresholds`;
            must provide ``pixel_threshold``); None leaves out the thresholded-mask column and the operating point.
        num_images: panels per image label (0 and 1).
        mean: per-channel mean the inputs were normalised with (default ImageNet's); None: min-max for display.
        std: matching per-channel std.
        map_range: (min, max) of the heat-map colour scale; None: from the shown maps.
        plot_curves: write the ROC and PR curves (needs normal and abnormal images in the evaluation).
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` to also log the images to.
        tag_name: TensorBoard tag prefix.
        image_key, pred_key, score_key, label_key, mask_key: keys of the per-image output dicts; the mask is
            optional in the output.
        name: logger name; None uses ``engine.logger``.
    """

    def __init__(
        self,
        output_dir: str,
        threshold_source: Any = None,
        num_images: int = 4,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        map_range: Sequence[float] | None = None,
        plot_curves: bool = True,
        summary_writer: Any = None,
        tag_name: str = "visual",
        image_key: str = "image",
        pred_key: str = "pred",
        score_key: str = "score",
        label_key: str = "label",
        mask_key: str = "mask",
        name: str | None = None,
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}.")
        if map_range is not None and (len(map_range) != 2 or map_range[0] >= map_range[1]):
            raise ValueError(f"map_range must be (min, max) with min < max, got {map_range}.")
        self.output_dir = Path(output_dir)
        self.threshold_source = threshold_source
        self.num_images = num_images
        self.mean = mean
        self.std = std
        self.map_range = map_range
        self.plot_curves = plot_curves
        self.summary_writer = summary_writer
        self.tag_name = tag_name
        self.keys = {"image": image_key, "pred": pred_key, "score": score_key, "label": label_key, "mask": mask_key}
        self.logger = logging.getLogger(name)
        self._name = name
        self._reset()

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the (test) evaluator.
        """
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self) -> None:
        self._scores: list[float] = []
        self._labels: list[float] = []
        self._selected: list[dict] = []

    def _collect(self, engine: Engine) -> None:
        keys = self.keys
        for item in decollated_output(engine):
            for role in ("image", "pred", "score", "label"):
                if keys[role] not in item:
                    raise KeyError(f"engine output has no {keys[role]!r} ({role}); keys are {sorted(item)}.")
            score = float(per_item_scalars([item[keys["score"]]], keys["score"])[0])
            label = int(per_item_scalars([item[keys["label"]]], keys["label"])[0])
            index = len(self._scores)
            self._scores.append(score)
            self._labels.append(label)
            if sum(s["label"] == label for s in self._selected) >= self.num_images:
                continue
            mask = item.get(keys["mask"])
            self._selected.append(
                {
                    "index": index,
                    "filename": item_filename(item, keys["image"]),
                    "image": torch.as_tensor(item[keys["image"]]).detach().float().cpu().numpy(),
                    "pred": torch.as_tensor(item[keys["pred"]]).detach().float().cpu().numpy(),
                    "mask": None if mask is None else torch.as_tensor(mask).detach().float().cpu().numpy(),
                    "score": score,
                    "label": label,
                }
            )

    def __call__(self, engine: Engine) -> None:
        scores, labels = gather_1d(np.asarray(self._scores)), gather_1d(np.asarray(self._labels))
        if idist.get_rank() != 0:
            return
        thresholds = None if self.threshold_source is None else resolve_thresholds(self.threshold_source)
        if thresholds is not None and thresholds["pixel_threshold"] is None:
            raise ValueError(
                f"threshold source ({thresholds['source']}) has no 'pixel_threshold' for the thresholded mask; "
                "calibrate with pixel_output_transform set."
            )
        figures: dict[str, Figure] = {}
        map_range = self.map_range or self._shared_map_range()
        for record in self._selected:
            stem = f"panels/{record['index']:04d}{_safe_stem(record['filename'])}"
            figures[stem] = self._panel(record, thresholds, map_range)
        if self.plot_curves:
            if np.unique(labels).size != 2:
                raise ValueError(
                    "ROC/PR curves need normal and abnormal images in the evaluation; set plot_curves=False."
                )
            threshold = None if thresholds is None else thresholds["threshold"]
            figures["roc_curve"] = self._roc_figure(scores, labels, threshold)
            figures["pr_curve"] = self._pr_figure(scores, labels, threshold)
        (self.output_dir / "panels").mkdir(parents=True, exist_ok=True)
        for stem, fig in figures.items():
            fig.savefig(self.output_dir / f"{stem}.png")
            if self.summary_writer is not None:
                tag = f"{self.tag_name}/{stem}"
                self.summary_writer.add_image(tag, _figure_rgb(fig), engine.state.epoch, dataformats="HWC")
        if self.summary_writer is not None:
            self.summary_writer.flush()
        self.logger.info(f"wrote {len(figures)} visual report images to {self.output_dir}")

    def _shared_map_range(self) -> tuple[float, float]:
        if not self._selected:
            return 0.0, 1.0
        low = min(float(r["pred"].min()) for r in self._selected)
        high = max(float(r["pred"].max()) for r in self._selected)
        return (low, high) if high > low else (low, low + 1.0)

    def _panel(self, record: Mapping, thresholds: Mapping | None, map_range: Sequence[float]) -> Figure:
        image = denormalize_image(record["image"], self.mean, self.std)
        amap = record["pred"]
        if amap.ndim != 3 or amap.shape[0] != 1 or amap.shape[1:] != image.shape[:2]:
            raise ValueError(f"anomaly map must have shape (1, {image.shape[0]}, {image.shape[1]}), got {amap.shape}.")
        amap = amap[0]
        mask = record["mask"]
        if mask is not None:
            if mask.size != amap.size:
                raise ValueError(f"mask of shape {mask.shape} does not match the anomaly map of shape {amap.shape}.")
            mask = mask.reshape(amap.shape)
        columns = ["input"] + (["ground truth"] if mask is not None else []) + ["anomaly map"]
        columns += ["predicted mask"] if thresholds is not None else []
        fig = Figure(figsize=(3.2 * len(columns), 3.6), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
        cmap_gray = "gray" if image.ndim == 2 else None
        for ax, title in zip(axes, columns):
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
            if title == "input":
                ax.imshow(image, cmap=cmap_gray)
            elif title == "ground truth":
                ax.imshow(mask, cmap="gray", vmin=0, vmax=1)
            elif title == "anomaly map":
                ax.imshow(image, cmap=cmap_gray)
                heat = ax.imshow(amap, cmap="jet", alpha=0.5, vmin=map_range[0], vmax=map_range[1])
                fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
            else:
                ax.imshow(amap >= thresholds["pixel_threshold"], cmap="gray", vmin=0, vmax=1)
                if mask is not None and mask.any():
                    ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        title = f"{Path(record['filename']).name if record['filename'] else record['index']}  label {record['label']}"
        title += f"  score {record['score']:.4g}"
        if thresholds is not None:
            decision = "anomalous" if record["score"] >= thresholds["threshold"] else "normal"
            title += f" -> {decision} (threshold {thresholds['threshold']:.4g})"
        fig.suptitle(title, fontsize=9)
        return fig

    @staticmethod
    def _roc_figure(scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> Figure:
        fpr, tpr, _ = roc_curve(labels, scores)
        fig = Figure(figsize=(4.5, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(fpr, tpr, label=f"AUROC {image_auroc(scores, labels):.4f}")
        ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
        if threshold is not None:
            predicted = scores >= threshold
            fpr_at, tpr_at = predicted[labels == 0].mean(), predicted[labels == 1].mean()
            ax.plot(fpr_at, tpr_at, "o", color="red", label=f"threshold {threshold:.4g}")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="image-level ROC")
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right")
        return fig

    @staticmethod
    def _pr_figure(scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> Figure:
        precision, recall, _ = precision_recall_curve(labels, scores)
        fig = Figure(figsize=(4.5, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.step(recall, precision, where="post", label=f"AP {average_precision(scores, labels):.4f}")
        ax.axhline(labels.mean(), linestyle=":", color="gray", label="prevalence")
        if threshold is not None:
            predicted = scores >= threshold
            if predicted.any():  # precision is undefined when nothing is flagged
                recall_at, precision_at = predicted[labels == 1].mean(), labels[predicted].mean()
                ax.plot(recall_at, precision_at, "o", color="red", label=f"threshold {threshold:.4g}")
        ax.set(xlabel="recall", ylabel="precision", title="image-level precision-recall", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower left")
        return fig
