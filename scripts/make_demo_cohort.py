"""Generate the embedded demo cohort and print how long it took and how big it is.

Usage::

    OMP_NUM_THREADS=2 python scripts/make_demo_cohort.py --root /tmp/demo --modality all --seed 0

Each modality is written to ``<root>/<modality>/`` (which must not exist yet); the script prints
the wall time and the CPU time of this process (on a shared machine the wall time also counts
other processes' load), the number of files, the size on disk and the slice counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medad_monai.data.demo import DEMO_MODALITIES, DemoCohortParameters, generate_demo_cohort, load_demo_template


def _files_and_bytes(folder: Path) -> tuple[int, int]:
    """Number of files under ``folder`` and their total size in bytes."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder that receives one sub-folder per modality")
    parser.add_argument("--modality", choices=[*DEMO_MODALITIES, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    defaults = DemoCohortParameters()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    parameters = {name: getattr(args, name) for name in vars(defaults)}

    start = time.perf_counter()
    load_demo_template()
    print(f"template loaded from the nilearn wheel in {time.perf_counter() - start:.1f} s")
    for modality in DEMO_MODALITIES if args.modality == "all" else (args.modality,):
        start, cpu_start = time.perf_counter(), time.process_time()
        datalist = generate_demo_cohort(args.root, modality, args.seed, **parameters)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        files, size = _files_and_bytes(datalist.parent)
        counts = json.loads((datalist.parent / "manifest.json").read_text())["counts"]
        print(
            f"{modality}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU, {files} files, "
            f"{size / 2**20:.1f} MiB in {datalist.parent}"
        )
        print(f"  subjects {counts['subjects']}")
        print(f"  slices   {counts['slices']}, dropped {counts['dropped_slices']}")


if __name__ == "__main__":
    main()
