"""Checkpoint handlers: resume interrupted training, load weights with errors that name the file."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

__all__ = ["BestModelSaver", "EvaluatorBestMetric", "LoadCheckpoint", "ResumeTraining", "latest_checkpoint"]

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(checkpoint_dir: str | Path, prefix: str = "last") -> Path | None:
    """The ``{prefix}_checkpoint_epoch=N.pt`` file with the largest ``N`` in ``checkpoint_dir``, or ``None``.

    These are the files MONAI's ``CheckpointSaver(file_prefix=prefix, save_interval=1, epoch_level=True)`` writes
    (atomically, through Ignite's ``DiskSaver``).
    """
    found = []
    for path in Path(checkpoint_dir).glob(f"{prefix}_checkpoint_epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class LoadCheckpoint(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (weights-only ``torch.load``) whose errors name the checkpoint file.

    A missing file, or a checkpoint written for another network or configuration
    (missing / unexpected keys, other shapes), raises an error that names
    ``load_path`` and says which config entry to change.
    """

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint not found: {path}. Train the bundle first or set the checkpoint path in the config."
            )
        try:
            super().__call__(engine)
        except (RuntimeError, KeyError, ValueError) as err:
            raise RuntimeError(
                f"checkpoint {path} does not fit this configuration ({type(err).__name__}: {str(err)[:500]}). "
                "Was it trained with another network or other network_def arguments?"
            ) from err


class ResumeTraining:
    """Resume training from the newest ``{prefix}_checkpoint_epoch=N.pt`` in ``checkpoint_dir`` if there is one.

    Attach to the trainer; at ``STARTED`` the trainer, network, optimizer and any
    other stateful object in ``load_dict`` are restored, so the finished epochs
    are not run again. With no checkpoint in the folder, training starts afresh.

    Args:
        checkpoint_dir: folder written by a ``CheckpointSaver`` with ``file_prefix=prefix``.
        load_dict: objects to restore, the same dict the saver saves.
        prefix: the saver's ``file_prefix``.
        enabled: ``False`` turns resuming off (always start afresh).
    """

    def __init__(self, checkpoint_dir: str | Path, load_dict: dict, prefix: str = "last", enabled: bool = True) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.load_dict = load_dict
        self.prefix = prefix
        self.enabled = enabled
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = latest_checkpoint(self.checkpoint_dir, self.prefix)
        if path is None:
            self.logger.info(f"no checkpoint to resume from in {self.checkpoint_dir}: training from scratch.")
            return
        LoadCheckpoint(str(path), self.load_dict, map_location="cpu")(engine)
        self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}.")


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
    """Save ``save_dict`` to ``save_path`` (atomically) whenever the evaluator's key metric improves.

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
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.save_path.with_name(self.save_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.save_path)
        self.logger.info(f"saved best model (epoch {engine.state.epoch}, metric {engine.state.best_metric:.4f}) to {self.save_path}")
