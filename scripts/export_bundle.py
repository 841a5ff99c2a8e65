"""Export a trained bundle's network to TorchScript (models/model.ts) and check it against the eager network.

Usage (from the repository root)::

    python scripts/export_bundle.py bundles/sp_mamba
    python scripts/export_bundle.py bundles/sp_mamba --device cuda --filepath bundles/sp_mamba/models/model_cuda.ts
    python scripts/export_bundle.py bundles/sp_mamba --image_size "[256,256]"   # any config override

It calls ``monai.bundle.ckpt_export`` in trace mode with the checkpoint key ``model`` and the
config's ``image_size`` (see :mod:`medad_monai.export`), loads the result with ``torch.jit.load``
and prints the largest difference from the eager network's anomaly maps; it fails above ``--atol``
(default 1e-4). The bare MONAI command that writes the same file on CPU::

    python -m monai.bundle ckpt_export network_def --bundle_root bundles/sp_mamba \\
        --filepath bundles/sp_mamba/models/model.ts --ckpt_file bundles/sp_mamba/models/model.pt \\
        --meta_file bundles/sp_mamba/configs/metadata.json --config_file bundles/sp_mamba/configs/inference.json \\
        --key_in_ckpt model --use_trace True --input_shape "[1,3,64,64]" --converter_kwargs "{'check_trace': False}"

(``check_trace`` is off there because the first trace also records the construction of the cached
scan orders, so the trace's self-check, which traces twice, sees two different graphs; this script
builds them first and keeps the check on.)
"""

from __future__ import annotations

import json

import fire

from medad_monai.export import export_torchscript


def main(
    bundle_root: str,
    ckpt_file: str | None = None,
    filepath: str | None = None,
    config_file: str | None = None,
    device: str = "cpu",
    atol: float = 1e-4,
    **overrides,
) -> None:
    """Export ``bundle_root``'s ``models/model.pt`` to TorchScript; ``overrides`` are config overrides."""
    result = export_torchscript(
        bundle_root, ckpt_file=ckpt_file, filepath=filepath, config_file=config_file, device=device, atol=atol,
        overrides=overrides,
    )
    summary = {k: str(v) if not isinstance(v, (int, float, tuple)) else v for k, v in vars(result).items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
