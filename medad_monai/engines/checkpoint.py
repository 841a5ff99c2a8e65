"""Checkpoint handlers: resume interrupted training, load weights with errors that name the file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

__all__ = ["LoadCheckpoint", "ResumeTraining", "latest_checkpoint"]

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
