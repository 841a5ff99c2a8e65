"""tqdm progress bars for trainers and evaluators (Ignite's ``ProgressBar``), usable from bundle configs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ignite.engine import Engine
from ignite.handlers import ProgressBar

__all__ = ["ProgressBarHandler", "attach_progress_bar"]


def attach_progress_bar(
    engine: Engine,
    desc: str = "",
    persist: bool = False,
    metric_names: str | Sequence[str] | None = None,
    output_transform: Callable | None = None,
) -> ProgressBar:
    """
    Attach an ``ignite.handlers.ProgressBar`` that advances every iteration and closes at the end of each epoch.

    Args:
        engine: trainer or evaluator.
        desc: text in front of the bar, e.g. ``"train"``.
        persist: keep the finished bar on screen.
        metric_names: names in ``engine.state.metrics`` to show, or ``"all"``.
        output_transform: maps ``engine.state.output`` to a number or a ``{name: number}`` dict to show, e.g.
            ``monai.handlers.from_engine(["loss"], first=True)`` for a MONAI trainer's loss.

    Returns:
        the attached progress bar.
    """
    bar = ProgressBar(persist=persist, desc=desc)
    names = list(metric_names) if isinstance(metric_names, (list, tuple)) else metric_names
    bar.attach(engine, metric_names=names, output_transform=output_transform)
    return bar


class ProgressBarHandler:
    """
    :func:`attach_progress_bar` as a handler object with ``attach(engine)``, for the ``train_handlers`` /
    ``val_handlers`` lists of MONAI bundle configs (Ignite's ``ProgressBar.attach`` needs more arguments than
    MONAI's workflows pass).

    Example (bundle config)::

        {"_target_": "medad_monai.handlers.ProgressBarHandler", "desc": "train",
         "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}

    Args:
        desc: text in front of the bar.
        persist: keep the finished bar on screen.
        metric_names: names in ``engine.state.metrics`` to show, or ``"all"``.
        output_transform: maps ``engine.state.output`` to a number or a ``{name: number}`` dict to show.
    """

    def __init__(
        self,
        desc: str = "",
        persist: bool = False,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable | None = None,
    ) -> None:
        self.desc = desc
        self.persist = persist
        self.metric_names = metric_names
        self.output_transform = output_transform
        self.bar: ProgressBar | None = None

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: trainer or evaluator.
        """
        self.bar = attach_progress_bar(engine, self.desc, self.persist, self.metric_names, self.output_transform)
