"""Checkpoint handlers: crash-safe resume points, resume that skips a corrupt file, weights loading with errors
that name the file and say whether it is corrupt or belongs to another configuration."""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader

from medad_monai.handlers.provenance import ProvenanceMismatchError
from medad_monai.handlers.utils import save_checkpoint

__all__ = [
    "BestModelSaver",
    "CorruptCheckpointError",
    "EvaluatorBestMetric",
    "LoadCheckpoint",
    "ResumePointSaver",
    "ResumeTraining",
    "latest_checkpoint",
    "read_checkpoint",
    "resume_points",
]

_EPOCH = re.compile(r"_checkpoint_epoch=(\d+)\.pt$")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, damaged, or not a checkpoint."""


def read_checkpoint(path: str | Path, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong with the file.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CorruptCheckpointError: the file is truncated or damaged (e.g. a copy or a save that was
            interrupted), or not a PyTorch checkpoint.
        ValueError: the file holds objects other than tensors and plain containers, which weights-only
            loading refuses to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. Train the bundle first or set the checkpoint path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and plain containers, which weights-only "
                "loading refuses: re-save the state dicts alone (torch.save({'model': net.state_dict()}, path))."
            ) from err
        raise CorruptCheckpointError(_corrupt(path, err)) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as err:
        raise CorruptCheckpointError(_corrupt(path, err)) from err


def _corrupt(path: Path, err: BaseException) -> str:
    return (
        f"checkpoint {path} is truncated or corrupt ({path.stat().st_size} bytes; {type(err).__name__}: "
        f"{str(err)[:200]}): it was not written or copied completely, or it is not a PyTorch checkpoint. "
        "Restore it, or delete it and train again."
    )


def resume_points(checkpoint_dir: str | Path, prefix: str = "last") -> list[Path]:
    """The ``{prefix}_checkpoint_epoch=N.pt`` files in ``checkpoint_dir``, newest (largest ``N``) first."""
    found = []
    for path in Path(checkpoint_dir).glob(f"{prefix}_checkpoint_epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(checkpoint_dir: str | Path, prefix: str = "last") -> Path | None:
    """The newest of :func:`resume_points`, or ``None``."""
    points = resume_points(checkpoint_dir, prefix)
    return points[0] if points else None


class LoadCheckpoint(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (weights-only ``torch.load``, ``strict`` loading, the engine's
    ``max_epochs`` kept) whose errors name the checkpoint file and say what is wrong with it.

    A missing file raises ``FileNotFoundError``; a truncated or damaged one
    :class:`CorruptCheckpointError`; a checkpoint written for another network or configuration
    (missing / unexpected keys, other shapes) a ``RuntimeError`` that says which config entry to
    change; a :class:`~medad_monai.handlers.Provenance` in ``load_dict`` that finds another
    modality or preset a ``ProvenanceMismatchError``. Each names ``load_path``.

    Args:
        load_path: the checkpoint file.
        load_dict: objects to restore, by checkpoint key.
        name: logger name.
        map_location: as for ``torch.load``.
        strict: as for ``CheckpointLoader``.
        optional_keys: keys of ``load_dict`` that checkpoints written by earlier versions lack (e.g.
            ``"provenance"``): when absent they are left as they are, with a warning.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
        optional_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(load_path, load_dict, name=name, map_location=map_location, strict=strict)
        self.optional_keys = tuple(optional_keys)

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        checkpoint = read_checkpoint(path, self.map_location)
        load_dict = dict(self.load_dict)
        first = next(iter(load_dict))
        if len(load_dict) == 1 and isinstance(checkpoint, Mapping) and first not in checkpoint:
            checkpoint = {first: checkpoint}  # a bare state dict (MONAI's convention for one object)
        if not isinstance(checkpoint, Mapping):
            raise CorruptCheckpointError(
                f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of state dicts."
            )
        for key in self.optional_keys:
            if key in load_dict and key not in checkpoint:
                self.logger.warning(f"checkpoint {path} has no {key!r} (written by an earlier version): not checked.")
                del load_dict[key]
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=load_dict, checkpoint=dict(checkpoint), strict=self.strict)
        except ProvenanceMismatchError as err:
            raise ProvenanceMismatchError(f"checkpoint {path} was {err}") from err
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise RuntimeError(
                f"checkpoint {path} does not fit this configuration ({type(err).__name__}: {str(err)[:500]}). "
                "Was it trained with another network or other network_def arguments?"
            ) from err
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"checkpoint {path} ends at epoch {engine.state.epoch}, beyond this run's max_epochs "
                f"({prior_max_epochs}): raise the number of epochs to train further."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"restored {sorted(load_dict)} from {path}")


class ResumePointSaver:
    """Save a resume point at the end of every epoch, crash-safe, keeping the newest ``keep``.

    Writes ``save_dict``'s state dicts to ``{file_prefix}_checkpoint_epoch=N.pt`` in ``save_dir`` (the
    names MONAI's ``CheckpointSaver(file_prefix=..., epoch_level=True)`` uses) with
    :func:`~medad_monai.handlers.utils.save_checkpoint`: a temporary file, ``fsync``, then a rename.
    Only then are older resume points deleted, including those of earlier runs, so a kill at any
    moment leaves at least the previous complete resume point. Every rank computes the state dicts
    (a handler's may gather across ranks); rank 0 writes. Wrapped networks (``DistributedDataParallel``)
    are saved by their ``module``.

    Args:
        save_dir: folder of the resume points.
        save_dict: objects with ``state_dict()``, by checkpoint key.
        file_prefix: file name prefix.
        keep: resume points to keep (at least 1; 2 keeps a fallback for a file damaged later).
    """

    def __init__(self, save_dir: str | Path, save_dict: dict, file_prefix: str = "last", keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}.")
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.file_prefix = file_prefix
        self.keep = keep
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = {key: getattr(obj, "module", obj).state_dict() for key, obj in self.save_dict.items()}
        if idist.get_rank() != 0:
            return
        path = self.save_dir / f"{self.file_prefix}_checkpoint_epoch={engine.state.epoch}.pt"
        save_checkpoint(state, path)
        for old in resume_points(self.save_dir, self.file_prefix)[self.keep :]:
            old.unlink(missing_ok=True)
        for stale in self.save_dir.glob(f".{self.file_prefix}_checkpoint_epoch=*.pt.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a process killed while writing
        self.logger.info(f"saved resume point {path}")


class ResumeTraining:
    """Resume training from the newest usable ``{prefix}_checkpoint_epoch=N.pt`` in ``checkpoint_dir``.

    Attach to the trainer; at ``STARTED`` the trainer, network, optimizer and any other stateful
    object in ``load_dict`` are restored, so the finished epochs are not run again. A resume point
    that is truncated or corrupt (:class:`CorruptCheckpointError`) is reported and the previous one
    is tried; with none usable, training starts afresh. A readable resume point that does not fit
    the configuration stops the run (that is a configuration error, not a damaged file).

    Args:
        checkpoint_dir: folder written by :class:`ResumePointSaver` with ``file_prefix=prefix``.
        load_dict: objects to restore, the same dict the saver saves.
        prefix: the saver's ``file_prefix``.
        enabled: ``False`` turns resuming off (always start afresh).
        optional_keys: see :class:`LoadCheckpoint`.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        load_dict: dict,
        prefix: str = "last",
        enabled: bool = True,
        optional_keys: Sequence[str] = (),
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.load_dict = load_dict
        self.prefix = prefix
        self.enabled = enabled
        self.optional_keys = tuple(optional_keys)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        for path in resume_points(self.checkpoint_dir, self.prefix):
            loader = LoadCheckpoint(str(path), self.load_dict, map_location="cpu", optional_keys=self.optional_keys)
            try:
                loader(engine)
            except CorruptCheckpointError as err:
                self.logger.warning(f"{err} Skipping it for the previous resume point.")
                continue
            self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}.")
            return
        self.logger.info(f"no usable checkpoint to resume from in {self.checkpoint_dir}: training from scratch.")


class EvaluatorBestMetric:
    """Stateful view of an evaluator's best key metric, to save in the training checkpoint.

    MONAI evaluators keep ``state.best_metric`` / ``state.best_metric_epoch`` in
    memory only; putting this object in the resumable checkpoint's ``save_dict``
    restores them, so the first evaluation after a resume does not replace a
    better saved model.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        return {"best_metric": self.evaluator.state.best_metric, "best_metric_epoch": self.evaluator.state.best_metric_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]


class BestModelSaver:
    """Save ``save_dict`` to ``save_path`` whenever the evaluator's key metric improves, crash-safe
    (:func:`~medad_monai.handlers.utils.save_checkpoint`: temporary file, ``fsync``, rename).

    Attach to a MONAI evaluator that has a key metric: MONAI updates
    ``state.best_metric_epoch`` before the handlers run, and this handler saves
    when it equals the current epoch. Items with ``state_dict()`` are saved by
    their state dict, so ``{"model": network_def, "threshold": calibration}`` gives a
    file that MONAI's ``CheckpointLoader`` and MONAI Label read as ``["model"]``
    (pass the unwrapped network, not its DistributedDataParallel wrapper).

    Args:
        save_path: file to write, e.g. ``models/model.pt``.
        save_dict: objects to save.
    """

    def __init__(self, save_path: str | Path, save_dict: dict) -> None:
        self.save_path = Path(save_path)
        self.save_dict = save_dict
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        # every rank computes the state dicts (a handler's state_dict may gather across ranks); rank 0 writes.
        state = {key: obj.state_dict() for key, obj in self.save_dict.items()}
        if idist.get_rank() != 0:
            return
        save_checkpoint(state, self.save_path)
        self.logger.info(f"saved best model (epoch {engine.state.epoch}, metric {engine.state.best_metric:.4f}) to {self.save_path}")
