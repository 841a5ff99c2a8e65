"""Convert a checkpoint of the official SP-Mamba code into this project's bundle weights.

Reads ``ckpt.pth`` or ``net.pth`` written by github.com/Ray-RuiPan/SP-Mamba's trainer, maps every
key onto :class:`medad_monai.detectors.SPMamba` (:mod:`medad_monai.detectors.sp_mamba.convert`),
checks that the converted network loads strictly, and writes ``{"model": state_dict}``, the
layout the bundle's ``evaluate.json`` and ``inference.json`` load from ``models/model.pt``. It
prints the ``network_def`` overrides that rebuild the official network and its anomaly maps.

Example::

    python scripts/convert_official_sp_mamba.py ckpt.pth bundles/sp_mamba/models/model.pt
    python -m monai.bundle run --config_file bundles/sp_mamba/configs/inference.json --input /path/to/images \\
        <the overrides printed>
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medad_monai.detectors.sp_mamba import SPMamba
from medad_monai.detectors.sp_mamba.convert import convert_official_state_dict, official_network_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="official ckpt.pth / net.pth")
    parser.add_argument("output", type=Path, help="bundle weights to write, e.g. bundles/sp_mamba/models/model.pt")
    args = parser.parse_args()
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    network_args = official_network_args(checkpoint)
    state = convert_official_state_dict(checkpoint)
    SPMamba(**network_args).load_state_dict(state, strict=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, args.output)
    print(f"wrote {args.output} ({len(state)} entries)")
    def literal(value: object) -> str:
        return '"' + str(list(value)).replace(" ", "") + '"' if isinstance(value, tuple) else str(value)

    overrides = [f"--image_size {literal(network_args.pop('image_size'))}"]
    overrides += [f"--network_def#{key} {literal(value)}" for key, value in network_args.items()]
    print("bundle overrides for the official network and anomaly maps:\n  " + " ".join(overrides))


if __name__ == "__main__":
    main()
