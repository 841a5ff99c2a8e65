"""MONAI Deploy application: unsupervised anomaly detection with a trained medad-monai bundle.

Reads a DICOM series folder (e.g. the head-CT demo series) or a NIfTI image / volume, runs the bundle
and writes, into the output folder:

- ``anomaly_map.nii.gz``: the float32 pixel anomaly map, in the input's geometry;
- ``anomaly_mask.nii.gz``: the mask ``map > pixel_threshold`` (uint8), same geometry;
- ``anomaly_seg.dcm``: the mask as a DICOM Segmentation (highdicom) of the source series, one frame
  per source image (DICOM inputs);
- ``result.json``: the image score, the thresholds, whether the score exceeds the image threshold.

Run (the deploy extra installs the SDK, highdicom and SimpleITK)::

    python deploy/app.py -i /path/to/dicom_series_or_nifti -o /path/to/output -m bundles/sp_mamba

``-m`` is the trained bundle folder (``models/model.pt``, ``models/threshold.json``). The bundle's
``modality`` comes from the DICOM Modality tag (CT -> ``ct``, MR -> ``mri``, ...), or from the
environment variable ``MEDAD_MODALITY``, else from the bundle's config.

Why a custom operator and not the SDK's ``MonaiBundleInferenceOperator``: the stock operator casts
every ``Image`` output to uint8 (the float anomaly map becomes {0, 1}), sends only the first network
output (no mask, no score), removes only transforms named ``LoadImage*`` from the bundle's
preprocessing (the bundles read files with ``medad_monai.transforms.ReadImaged``, which then gets an
already-loaded array), and describes the raw input with ``network_data_format`` (3 channels, 64 x 64:
the network's input after preprocessing, not the image). :class:`AnomalyBundleOperator` runs the
bundle's own ``inference.json`` (with ``inference_volume.json`` for volumes) through
:func:`medad_monai.serving.run_bundle`: the same reader, preprocessing, inferer, score and threshold
as ``monai.bundle run``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec

from medad_monai.serving import run_bundle, write_outputs

logger = logging.getLogger(__name__)


def _input_image(path: Path) -> Path:
    """The image to run on: the path itself (a file or a DICOM series folder), or the only image or
    series inside a folder."""
    if path.is_file() or any(p.suffix.lower() == ".dcm" for p in path.iterdir() if p.is_file()):
        return path
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1:
        raise ValueError(f"input folder {path} must be one DICOM series, or hold exactly one image or series.")
    return entries[0]


class AnomalyBundleOperator(Operator):
    """Runs a trained bundle on the application's input; emits a :class:`medad_monai.serving.AnomalyResult`
    on ``result``."""

    def __init__(self, fragment: Fragment, *args, app_context: AppContext, bundle_path: Path, **kwargs) -> None:
        self.app_context = app_context
        self.bundle_path = Path(bundle_path)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("result")

    def compute(self, op_input, op_output, context) -> None:
        image = _input_image(Path(self.app_context.input_path))
        logger.info(f"running bundle {self.bundle_path} on {image}")
        result = run_bundle(self.bundle_path, image, modality=os.environ.get("MEDAD_MODALITY") or None)
        op_output.emit(result, "result")


class AnomalyWriterOperator(Operator):
    """Writes the map and mask (NIfTI), the DICOM SEG (DICOM inputs) and ``result.json``."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("result")

    def compute(self, op_input, op_output, context) -> None:
        files = write_outputs(op_input.receive("result"), self.output_folder)
        logger.info(f"wrote {files}")


class AnomalyDetectionApp(Application):
    """Input (DICOM series or NIfTI) -> bundle inference -> map, mask, DICOM SEG and score."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        bundle = Path(app_context.model_path)
        if not (bundle / "configs" / "inference.json").is_file():
            raise FileNotFoundError(f"-m/--model must be a bundle folder with configs/inference.json, got {bundle}.")
        infer = AnomalyBundleOperator(self, CountCondition(self, 1), app_context=app_context, bundle_path=bundle, name="infer")
        writer = AnomalyWriterOperator(self, output_folder=Path(app_context.output_path), name="writer")
        self.add_flow(infer, writer, {("result", "result")})


if __name__ == "__main__":
    AnomalyDetectionApp().run()
