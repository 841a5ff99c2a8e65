"""Package a trained bundle as a MONAI bundle zip, or check an installed bundle's weights.

Usage (from the repository root)::

    python scripts/export_bundle.py bundles/sp_mamba                  # optional: models/model.ts
    python scripts/package_bundle.py package bundles/sp_mamba --output_dir dist
    # -> dist/sp_mamba_v<version>.zip, with metadata.json's weights_sha256
    python -m monai.bundle download --name sp_mamba --url file://$PWD/dist/sp_mamba_v0.1.2.zip --bundle_dir /opt/bundles
    python scripts/package_bundle.py verify /opt/bundles/sp_mamba     # checks the SHA-256 of every listed file

See :mod:`medad_monai.packaging`.
"""

from __future__ import annotations

import json

import fire

from medad_monai.packaging import package_bundle, verify_weights, weights_sha256


def package(bundle_root: str, output_dir: str = "dist") -> None:
    """Write ``<output_dir>/<name>_v<version>.zip`` and print its path and the weights' SHA-256."""
    path = package_bundle(bundle_root, output_dir)
    print(json.dumps({"zip": str(path), "weights_sha256": weights_sha256(bundle_root)}, indent=1))


def verify(bundle_root: str) -> None:
    """Check the SHA-256 of the files metadata.json lists; exit non-zero on a mismatch."""
    checked = verify_weights(bundle_root)
    print(json.dumps({"verified": checked}, indent=1))


if __name__ == "__main__":
    fire.Fire({"package": package, "verify": verify})
