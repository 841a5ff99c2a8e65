"""Helpers that the MONAI bundles under ``bundles/`` call from their configs: the bundle root, the inputs of an
inference run, and a run that ends with a short summary of what went wrong."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from types import TracebackType

from medad_monai.data.datalist import load_anomaly_datalist
from medad_monai.data.folders import IMAGE_SUFFIXES, common_root, folder_items
from medad_monai.data.isolation import failure_reason
from medad_monai.transforms.post import read_threshold

__all__ = [
    "IMAGE_SUFFIXES",
    "common_root",
    "error_summary",
    "find_bundle_root",
    "inference_items",
    "read_threshold",
    "report_errors",
]

# where MONAI's config resolver keeps the id of the entry it resolves (monai.bundle.ReferenceResolver)
_RESOLVER_FRAME = "_resolve_one_item"


def find_bundle_root(name: str) -> str:
    """The folder of bundle ``name``, for configs run from the bundle itself or from the repository root.

    ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json`` (repository root) and
    ``python -m monai.bundle run --config_file configs/train.json`` (inside the bundle) both work; anywhere
    else, pass ``--bundle_root /path/to/bundle`` explicitly.
    """
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / name):
        metadata = candidate / "configs" / "metadata.json"
        if metadata.is_file() and json.loads(metadata.read_text()).get("name", "").replace(" ", "_").lower() == name:
            return str(candidate)
    raise FileNotFoundError(
        f"cannot find the {name!r} bundle from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root /path/to/bundle."
    )


def inference_items(source: str | Path, data_list_key: str = "test") -> list[dict]:
    """Items ``{"image": path}`` to run inference on, from a datalist JSON, a folder or one file.

    Args:
        source: a datalist JSON (items of ``data_list_key``; labels are not needed, and a missing file
            fails as one input, not the run), a folder (see
            :func:`~medad_monai.data.folder_items`: every file under it, DICOM files grouped into
            series by *SeriesInstanceUID*), or one image file or DICOM series folder.
        data_list_key: split to read from a datalist.

    Raises:
        FileNotFoundError: ``source`` does not exist, or a folder holds no file.
        ValueError: a datalist split without items.
    """
    path = Path(source)
    if path.suffix == ".json":
        items = load_anomaly_datalist(
            path, data_list_key, require_labels=False, allow_empty=False, require_files=False
        )
        return [{"image": item["image"]} for item in items]
    if path.is_file():
        return [{"image": str(path)}]
    if not path.is_dir():
        raise FileNotFoundError(f"inference input not found: {path}")
    return folder_items(path)


def _config_ids(err: BaseException) -> list[str]:
    """The ids of the config entries MONAI was resolving when ``err`` was raised, outermost first."""
    ids: list[str] = []
    tb: TracebackType | None = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == _RESOLVER_FRAME and isinstance(frame.f_locals.get("id"), str):
            ids.append(frame.f_locals["id"].replace("::", "#"))  # the separator the configs and command line use
        tb = tb.tb_next
    return ids


def error_summary(err: BaseException, log_file: str | os.PathLike | None = None, max_lines: int = 12) -> str:
    """A few lines for the end of a failed run: the error that says what went wrong (past MONAI's config
    and transform wrappers, see :func:`~medad_monai.data.failure_reason`), the config entry being
    resolved, and where the full traceback is."""
    reason = failure_reason(err).splitlines()
    if len(reason) > max_lines:
        reason = reason[:max_lines] + [f"... ({len(reason) - max_lines} more lines in the log file)"]
    lines = ["ERROR: " + "\n  ".join(reason)]
    ids = _config_ids(err)
    if ids:
        lines.append(f"  config entry: '{ids[-1]}'" + (f" (resolving '{ids[0]}')" if ids[0] != ids[-1] else ""))
    if log_file is not None:
        lines.append(f"  full traceback: {log_file} (or rerun with --debug true to print it here)")
    return "\n".join(lines)


class _BriefFormatter(logging.Formatter):
    """Wraps a console formatter: log records keep their message, a traceback becomes one line."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None  # not cached: a file handler still writes the traceback
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        return text + (f" [{exc_info[0].__name__}: traceback in the log file]" if exc_info and exc_info[0] else "")


def report_errors(log_file: str | os.PathLike, debug: bool = False) -> None:
    """Make a bundle run end with a short message when it fails; the full traceback goes to ``log_file``.

    Call it first in a bundle's ``initialize``: it adds a file handler for ``log_file`` (the run's
    whole log, tracebacks included) to the root logger, shortens tracebacks that console handlers
    would print to one line, and sets ``sys.excepthook`` so that an uncaught error writes its full
    traceback to ``log_file`` and prints :func:`error_summary` instead of MONAI's config traceback.
    The exit status stays non-zero. With ``debug`` the console keeps the full tracebacks.

    Args:
        log_file: the run's log file (appended to).
        debug: print full tracebacks on the console too.
    """
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_medad_log", False)]:
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    file_handler._medad_log = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if not debug:
        for handler in root.handlers:
            if type(handler) is logging.StreamHandler and not isinstance(handler.formatter, _BriefFormatter):
                handler.setFormatter(_BriefFormatter(handler.formatter))

    def hook(exc_type: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(exc_type, Exception):
            sys.__excepthook__(exc_type, err, tb)
            return
        full = "".join(traceback.format_exception(exc_type, err, tb))
        try:
            with open(log_file, "a") as f:
                f.write(f"uncaught error, full traceback:\n{full}\n")
            where: Path | None = log_file
        except OSError:
            where = None
        if debug or where is None:
            sys.stderr.write(full)
        sys.stderr.write("\n" + error_summary(err, where) + "\n")
        sys.stderr.flush()

    sys.excepthook = hook
