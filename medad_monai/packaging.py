"""Share a trained bundle: package it as a MONAI bundle zip with its weights' SHA-256 in metadata.json,
and check those hashes where the bundle is installed.

The zip is laid out as MONAI's model zoo lays out its bundles (``<name>/configs``, ``<name>/models``,
``<name>/docs``, ...), named ``<name>_v<version>.zip``, so MONAI's own tools install and load it::

    python -m monai.bundle download --name sp_mamba --url file:///path/sp_mamba_v0.1.2.zip --bundle_dir /opt/bundles
    python -m monai.bundle run --config_file /opt/bundles/sp_mamba/configs/inference.json \\
        --bundle_root /opt/bundles/sp_mamba --input /path/to/images

Data, evaluation outputs, TensorBoard runs and resume checkpoints stay out of the zip; the trained
model (``models/model.pt``), its thresholds (``models/threshold.json``) and, when exported, the
TorchScript model (``models/model.ts``) go in, and ``metadata.json`` lists their SHA-256 under
``weights_sha256`` (the bundle folder itself is left unchanged).
"""

from __future__ import annotations

import fnmatch
import json
import os
import zipfile
from pathlib import Path

from medad_monai.export import file_sha256

__all__ = ["EXCLUDED", "WEIGHT_FILES", "package_bundle", "verify_weights", "weights_sha256"]

#: Files whose SHA-256 goes into metadata.json's ``weights_sha256`` when they exist.
WEIGHT_FILES = ("models/model.pt", "models/model.ts", "models/threshold.json")
#: Bundle-relative path patterns left out of the zip: data, outputs, resume checkpoints, caches.
EXCLUDED = ("data/*", "eval/*", "runs/*", "models/last_checkpoint*", "models/.gitkeep", "*__pycache__*", "*.pyc", ".*")
#: metadata.json's key holding ``{bundle-relative path: sha256}``.
HASH_KEY = "weights_sha256"


def weights_sha256(bundle_root: str | os.PathLike) -> dict[str, str]:
    """``{path: sha256}`` of the :data:`WEIGHT_FILES` present in ``bundle_root``."""
    root = Path(bundle_root)
    return {name: file_sha256(root / name) for name in WEIGHT_FILES if (root / name).is_file()}


def _excluded(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in EXCLUDED)


def package_bundle(bundle_root: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip`` from a trained bundle folder.

    Raises:
        FileNotFoundError: the bundle has no ``configs/metadata.json`` or no ``models/model.pt``.
    """
    root = Path(bundle_root).resolve()
    meta_path = root / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not a bundle: {meta_path} does not exist.")
    if not (root / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"{root / 'models' / 'model.pt'} does not exist: train the bundle before packaging it.")
    metadata = json.loads(meta_path.read_text())
    metadata[HASH_KEY] = weights_sha256(root)
    name = metadata.get("name", root.name).replace(" ", "_").lower()
    target = Path(output_dir) / f"{name}_v{metadata.get('version', '0')}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or _excluded(relative):
                continue
            if relative == "configs/metadata.json":
                archive.writestr(f"{name}/{relative}", json.dumps(metadata, indent=4) + "\n")
            else:
                archive.write(path, f"{name}/{relative}")
    return target


def verify_weights(bundle_root: str | os.PathLike) -> dict[str, str]:
    """Check the files listed in metadata.json's ``weights_sha256`` against their SHA-256; return the list.

    A bundle whose metadata has no ``weights_sha256`` (a bundle trained in place) returns ``{}``.

    Raises:
        FileNotFoundError: a listed file is missing.
        ValueError: a listed file's SHA-256 differs (the file names it).
    """
    root = Path(bundle_root)
    expected = json.loads((root / "configs" / "metadata.json").read_text()).get(HASH_KEY, {})
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in metadata.json's {HASH_KEY} but does not exist.")
        actual = file_sha256(path)
        if actual != digest:
            raise ValueError(f"{path} has SHA-256 {actual}, but metadata.json's {HASH_KEY} expects {digest}.")
    return expected
