"""Write the MONAI Label variants of a trained bundle into a MONAI Label app's model folder.

Usage (from the repository root, in the environment with the label extra)::

    python scripts/make_label_bundles.py bundles/sp_mamba apps/monaibundle/model
    # -> apps/monaibundle/model/sp_mamba (2D images) and apps/monaibundle/model/sp_mamba_volume (3D volumes)

See :func:`medad_monai.label.make_label_bundles` and the README's MONAI Label section.
"""

from __future__ import annotations

import fire

from medad_monai.label import make_label_bundles


def main(bundle_root: str, model_dir: str, name: str | None = None) -> None:
    for variant, folder in make_label_bundles(bundle_root, model_dir, name).items():
        print(f"{variant}: {folder}")


if __name__ == "__main__":
    fire.Fire(main)
