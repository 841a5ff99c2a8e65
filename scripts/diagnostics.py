"""What the validation-split diagnostic scripts (``score_ablation.py``, ``lesion_insertion_probe.py``) share:
a trained bundle's config with ``--key value`` overrides and its network with the checkpoint's weights
(imported as ``diagnostics`` when a script runs from scripts/)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]


def trained_bundle(bundle: str, ckpt: Path | None, overrides: list[str]) -> tuple[ConfigParser, torch.nn.Module]:
    """``bundles/<bundle>/configs/train.json`` with ``overrides`` applied, and its ``network_def`` in eval mode
    holding the weights of ``ckpt`` (default ``bundles/<bundle>/models/model.pt``).

    ``overrides`` are the script's unparsed arguments, ``[--] --key value ...`` as ``monai.bundle run`` takes
    them; values that read as JSON (numbers, lists, dicts, booleans) are parsed, others stay strings.
    """
    overrides = overrides[1:] if overrides[:1] == ["--"] else overrides  # the usage's separator
    if len(overrides) % 2:
        raise SystemExit(f"bundle overrides come in pairs (--key value), got {overrides}.")
    config = ConfigParser()
    config.read_config(ROOT / "bundles" / bundle / "configs" / "train.json")
    for key, value in zip(overrides[::2], overrides[1::2]):
        config[key.lstrip("-")] = json.loads(value) if value[:1] and value[:1] in "[{0123456789-" or value in ("true", "false") else value
    torch.set_flush_denormal(True)
    network = config.get_parsed_content("network_def")
    network.load_state_dict(torch.load(ckpt or ROOT / "bundles" / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)["model"])
    return config, network.eval()
