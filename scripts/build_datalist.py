"""Write the datalist JSON of a public benchmark downloaded to ``root``.

    python scripts/build_datalist.py <dataset> <root> <out.json> [--val-fraction F] [--seed N] [options]

``dataset`` is one of ``medad_monai.data.benchmarks.DATASET_BUILDERS``. Options that a
dataset's builder does not take are refused. Paths in the JSON are relative to its folder,
so write it into ``root`` and pass ``--dataset_dir root`` to the bundles. BUSI's merged
masks go to ``<out folder>/masks_merged`` unless ``--merged-mask-dir`` says otherwise.
See docs/datasets.md.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from medad_monai.data.benchmarks import DATASET_BUILDERS, build_datalist
from medad_monai.data.datalist import write_datalist

# (flag, argparse keywords); each flag's dest is the builder keyword it sets.
OPTIONS: tuple[tuple[str, dict], ...] = (
    ("--val-fraction", {"type": float, "help": "fraction of each label of the non-test pool carved for validation"}),
    ("--seed", {"type": int, "help": "seed of the drawn splits"}),
    ("--classes", {"nargs": "+", "help": "bmad: class folders to include (default: all)"}),
    ("--no-require-masks", {"dest": "require_masks", "action": "store_false", "help": "bmad: image-level classes"}),
    ("--n-test-normal", {"type": int, "help": "busi, head_ct: normal images held out for the test split"}),
    ("--merged-mask-dir", {"help": "busi: folder for merged multi-lesion masks"}),
    ("--image-dir", {"help": "head_ct: image folder relative to root"}),
    ("--labels-csv", {"help": "head_ct: labels file relative to root"}),
    ("--train-dir", {"help": "zhanglab, chexpert: train split folder name"}),
    ("--val-dir", {"help": "zhanglab, chexpert: validation split folder name"}),
    ("--test-dir", {"help": "zhanglab, chexpert: test split folder name"}),
    ("--normal-dir", {"help": "zhanglab, chexpert: normal class folder name"}),
    ("--abnormal-dir", {"help": "zhanglab, chexpert: abnormal class folder name"}),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASET_BUILDERS))
    parser.add_argument("root", type=Path, help="the downloaded dataset folder")
    parser.add_argument("out", type=Path, help="datalist JSON to write")
    for flag, kwargs in OPTIONS:
        # SUPPRESS: an option left out stays out of the namespace, so the builder's default applies.
        parser.add_argument(flag, default=argparse.SUPPRESS, **kwargs)
    return parser


def _summary(datalist: dict[str, list[dict]]) -> str:
    lines = []
    for split, items in datalist.items():
        abnormal = sum(item["label"] for item in items)
        masks = sum("mask" in item for item in items)
        counts = f"{len(items) - abnormal} normal, {abnormal} abnormal, {masks} masks"
        lines.append(f"{split:>10}: {len(items):6d} images ({counts})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    name, root, out = args.pop("dataset"), args.pop("root"), args.pop("out")
    accepted = inspect.signature(DATASET_BUILDERS[name]).parameters
    flags = {kwargs.get("dest", flag[2:].replace("-", "_")): flag for flag, kwargs in OPTIONS}
    for key in args:
        if key not in accepted:
            parser.error(f"{flags[key]} does not apply to dataset {name}")
    if "merged_mask_dir" in accepted:
        args.setdefault("merged_mask_dir", out.parent / "masks_merged")
    try:
        datalist = build_datalist(name, root, **args)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    write_datalist(out, datalist)
    print(f"wrote {out}\n{_summary(datalist)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
