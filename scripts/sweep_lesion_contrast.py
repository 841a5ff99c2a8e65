"""How the audit's floors move with the tumours' FLAIR contrast (brain MRI demo cohort).

The difficulty audit (``scripts/audit_demo_cohort.py``) asks two things of the floor baselines that
pull against each other: the per-pixel z-score should be clearly above chance (the lesions can be
seen) while plain intensity thresholding stays well below the detectors' goals (the lesions are not
just the brightest thing in the slice). Both floors read intensity, so both rise with the lesions'
contrast. This script measures that trade-off: for each scale it generates a brain MRI cohort whose
tumour oedema contrast range (``_OEDEMA_CONTRAST`` of :mod:`medad_monai.data.demo.lesions`, 0.1-0.5 in
generator version 5) is multiplied by the scale, audits its test split and prints one row per scale.
Everything else of the cohort (subjects, anatomy, noise, lesion sizes and places, the tumour cores,
the other lesion kinds) is the shipped generator's.

The cohorts are experiments, written under ``--root`` (one folder per scale); the shipped cohort is
not touched.

Usage::

    python scripts/sweep_lesion_contrast.py [--scales 1 2 3] [--root /tmp/contrast_sweep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medad_monai.data import generate_demo_cohort
from medad_monai.data.demo import lesions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_demo_cohort import FLOORS, audit_modality

_SHIPPED_OEDEMA = lesions._OEDEMA_CONTRAST


def sweep(scales: Sequence[float], root: Path, seed: int = 0) -> list[dict]:
    """One record per scale: the scale, the test split's lesion contrast (median |log ratio|) and
    the floors' image AUROC, pixel AUROC and AUPRO."""
    rows = []
    try:
        for scale in scales:
            # the painter reads the range at call time: the generator's own code paints the tumours
            lesions._OEDEMA_CONTRAST = (
                _SHIPPED_OEDEMA[0] * scale,
                _SHIPPED_OEDEMA[1] * scale,
            )
            folder = root / f"scale_{scale:g}"
            shutil.rmtree(folder, ignore_errors=True)
            datalist = generate_demo_cohort(folder, "brain_mri", seed)
            audit = audit_modality(datalist, "brain_mri", ("test",))["test"]
            rows.append(
                {
                    "scale": scale,
                    "contrast": float(np.median(audit.conspicuity["contrast"])),
                    "floors": audit.floors,
                }
            )
    finally:
        lesions._OEDEMA_CONTRAST = _SHIPPED_OEDEMA
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/contrast_sweep"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any(scale <= 0 for scale in args.scales):
        parser.error(f"--scales must be positive, got {args.scales}")
    rows = sweep(args.scales, args.root, args.seed)
    header = (
        "| oedema contrast | median lesion contrast | "
        + " | ".join(f"{f}: image / pixel AUROC, AUPRO" for f in FLOORS)
        + " |"
    )
    print(header)
    print("|" + "---|" * (2 + len(FLOORS)))
    for row in rows:
        low, high = (bound * row["scale"] for bound in _SHIPPED_OEDEMA)
        cells = [
            " / ".join(
                f"{row['floors'][f][k]:.2f}"
                for k in ("image_auroc", "pixel_auroc", "aupro")
            )
            for f in FLOORS
        ]
        print(
            f"| {low:.2f}-{high:.2f} | {row['contrast']:.3f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
