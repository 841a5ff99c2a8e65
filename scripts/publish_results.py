"""Copy an evaluation report's figures into a bundle's ``metadata.json`` (``eval_metrics``).

The figures a bundle publishes are then exactly those of a report written by its
``evaluate.json``: overall metrics, metrics per lesion kind, the split's counts, the encoder
weights, the datalist's hash, and the command that produced them. ``eval_metrics`` holds one
entry per demo cohort (``brain_mri``, ``head_ct``); other cohorts' entries are kept. Prints the figures as markdown
table rows (overall, then per lesion kind) for the bundle docs.

Usage::

    python scripts/publish_results.py --bundle sp_mamba --cohort brain_mri \\
        --report bundles/sp_mamba/eval/evaluation_report.json [--command "python -m monai.bundle run ..."]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medad_monai.data.demo import DEMO_GENERATOR_VERSION, DEMO_MODALITIES
from medad_monai.handlers.utils import write_text

ROOT = Path(__file__).resolve().parents[1]
#: Figures copied from the report's overall metrics, rounded for the metadata.
METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro")


def rounded(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def results_entry(report: dict, cohort: str, command: str) -> dict:
    """The ``eval_metrics`` entry of one cohort, from an evaluation report."""
    metrics = report["metrics"]
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        raise KeyError(f"the report has no {missing}; it has {sorted(metrics)}.")
    counts = report["num_images"]
    return {
        "dataset": f"embedded demo {cohort} cohort (seed 0, generator version {DEMO_GENERATOR_VERSION}), test split: "
        f"{counts['normal']} normal / {counts['abnormal']} abnormal slices",
        **{m: rounded(metrics[m]) for m in METRICS},
        "per_kind": {
            kind: {k: rounded(v) for k, v in values.items()} for kind, values in (report.get("per_kind") or {}).items()
        },
        "encoder_weights": report.get("encoder_weights"),
        "datalist_sha256": (report.get("datalist") or {}).get("sha256"),
        "command": command,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="bundle folder name under bundles/")
    parser.add_argument("--cohort", required=True, choices=DEMO_MODALITIES)
    parser.add_argument("--report", required=True, type=Path, help="evaluation_report.json of evaluate.json")
    parser.add_argument("--command", default=None, help="the command that produced the report")
    args = parser.parse_args()
    metadata_path = ROOT / "bundles" / args.bundle / "configs" / "metadata.json"
    if not metadata_path.is_file():
        raise SystemExit(f"no metadata.json at {metadata_path}: check --bundle.")
    if not args.report.is_file():
        raise SystemExit(f"no evaluation report at {args.report}: run the bundle's evaluate.json first.")
    cohort = "" if args.cohort == "brain_mri" else f" --demo_cohort {args.cohort}"
    bundle = f"bundles/{args.bundle}/configs"
    command = args.command or (
        f"python -m monai.bundle run --config_file {bundle}/train.json{cohort} && python -m monai.bundle run "
        f"--config_file \"['{bundle}/train.json','{bundle}/evaluate.json']\"{cohort}"
    )
    metadata = json.loads(metadata_path.read_text())
    previous = metadata.get("eval_metrics")
    results = previous if isinstance(previous, dict) and set(previous) <= set(DEMO_MODALITIES) else {}
    report = json.loads(args.report.read_text())
    results[args.cohort] = results_entry(report, args.cohort, command)
    metadata["eval_metrics"] = dict(sorted(results.items()))
    write_text(metadata_path, json.dumps(metadata, indent=4) + "\n")
    print(f"{metadata_path}: eval_metrics.{args.cohort} from {args.report}")
    print("\n| test split | images | image AUROC | image AP | pixel AUROC | AUPRO |\n|---|---|---|---|---|---|")
    counts = report["num_images"]
    rows = [("all", report["metrics"]), *sorted((report.get("per_kind") or {}).items())]
    for kind, values in rows:
        count = values.get("count", f"{counts['normal']} / {counts['abnormal']}")
        cells = " | ".join(f"{values[m]:.3f}" for m in ("image_auroc", "image_ap", "pixel_auroc", "aupro"))
        print(f"| {args.bundle}, {kind} | {count} | {cells} |")


if __name__ == "__main__":
    main()
