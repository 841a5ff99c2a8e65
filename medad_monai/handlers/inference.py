"""Inference results written as each item finishes: scores, failures and a closing summary."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import IO, Any

from ignite.engine import Engine, Events

from medad_monai.handlers.utils import as_scalar, decollated_output, item_filename, resolve_thresholds

__all__ = ["InferenceFailed", "InferenceResultsWriter"]

SCORE_COLUMNS = ("image", "score", "anomalous", "anomaly_map")
FAILURE_COLUMNS = ("image", "reason")


class InferenceFailed(RuntimeError):
    """Some inputs of an inference run failed; the others have their outputs."""


class InferenceResultsWriter:
    """Write one ``scores.csv`` row per scored item as it finishes, one ``failures.csv`` row per failed item,
    and end the run with a one-line summary; a run with failures then raises :class:`InferenceFailed`.

    Rows are flushed item by item, so a crash loses nothing already done. ``scores.csv`` columns:
    ``image`` (the source, relative to ``data_root`` when given), ``score`` (``score_key``), ``anomalous``
    (1 when the score reaches the calibrated image threshold, 0 otherwise, empty without ``threshold``)
    and ``anomaly_map`` (the written map relative to ``output_dir``, from ``meta["saved_to"]`` of
    ``map_key``: give ``SaveImaged`` ``savepath_in_metadict=True``). ``failures.csv`` columns: ``image``,
    ``reason`` (from ``engine.state.item_failures``, filled by
    :class:`~medad_monai.engines.IsolatingEvaluator`). Both files are written afresh at ``STARTED``.
    The thresholds are read at ``STARTED`` too, so a missing threshold file stops the run before any item.

    Args:
        output_dir: folder of the two files.
        data_root: folder the ``image`` column is relative to (the inputs' common folder).
        threshold: image threshold source (see :func:`~medad_monai.handlers.resolve_thresholds`), or ``None``.
        score_key: output key of the image score.
        map_key: output key of the anomaly map.
        scores_file: file name of the scores.
        failures_file: file name of the failures.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        data_root: str | os.PathLike | None = None,
        threshold: Any = None,
        score_key: str = "score",
        map_key: str = "pred",
        scores_file: str = "scores.csv",
        failures_file: str = "failures.csv",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.data_root = None if data_root is None else Path(data_root)
        self.threshold_source = threshold
        self.score_key, self.map_key = score_key, map_key
        self.scores_path = self.output_dir / scores_file
        self.failures_path = self.output_dir / failures_file
        self.logger = logging.getLogger(__name__)
        self._files: dict[str, tuple[IO[str], Any]] = {}
        self._threshold: float | None = None
        self.num_scored = 0
        self.failures: list[dict[str, str]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _relative(self, path: str, root: Path | None) -> str:
        if root is None or not os.path.isabs(path):
            return path
        relative = os.path.relpath(path, root)
        return path if relative.startswith("..") else relative

    def _start(self, engine: Engine) -> None:
        if self.threshold_source is not None:
            self._threshold = float(resolve_thresholds(self.threshold_source)["threshold"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.num_scored, self.failures = 0, []
        for path, columns in ((self.scores_path, SCORE_COLUMNS), (self.failures_path, FAILURE_COLUMNS)):
            f = open(path, "w", newline="")
            writer = csv.writer(f)
            writer.writerow(columns)
            f.flush()
            self._files[path.name] = (f, writer)

    def _row(self, path: Path, row: list) -> None:
        f, writer = self._files[path.name]
        writer.writerow(row)
        f.flush()

    def _write(self, engine: Engine) -> None:
        for item in decollated_output(engine) if engine.state.output else []:
            if self.score_key not in item:
                continue
            score = float(as_scalar(item[self.score_key], self.score_key))
            source = item_filename(item, self.map_key) or "<unknown>"
            saved = getattr(item.get(self.map_key), "meta", {}).get("saved_to")
            anomalous = "" if self._threshold is None else int(score >= self._threshold)
            saved_name = "" if saved is None else self._relative(str(saved), self.output_dir)
            self._row(self.scores_path, [self._relative(source, self.data_root), f"{score:.6g}", anomalous, saved_name])
            self.num_scored += 1
        for record in getattr(engine.state, "item_failures", []):
            record = {"image": self._relative(record["image"], self.data_root), "reason": record["reason"]}
            self._row(self.failures_path, [record["image"], record["reason"]])
            self.failures.append(record)
            self.logger.warning(f"failed: {record['image']}: {record['reason']}")

    def _finish(self, engine: Engine) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files = {}
        total = self.num_scored + len(self.failures)
        summary = (
            f"inference: {self.num_scored} of {total} inputs scored; maps, masks and {self.scores_path.name} "
            f"in {self.output_dir}"
        )
        if not self.failures:
            self.logger.info(summary + ".")
            return
        first = self.failures[0]
        summary += f"; {len(self.failures)} failed, listed with their reasons in {self.failures_path}"
        self.logger.warning(summary + ".")
        raise InferenceFailed(
            f"{len(self.failures)} of {total} inputs failed (the first, {first['image']}: {first['reason'][:300]}). "
            f"All failures and their reasons are in {self.failures_path}; the other {self.num_scored} inputs have "
            f"their outputs in {self.output_dir}. Fix or remove the failed files and run again."
        )
