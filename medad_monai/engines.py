"""An evaluator for inference on many files, where one item's failure never stops the others."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.utils import CommonKeys

from medad_monai.data.isolation import FAILURE_KEY, failure_reason

__all__ = ["IsolatingEvaluator"]


def _batch_sources(batch: dict, key: str) -> list[str]:
    """The source file of each item of a collated batch (``meta["filename_or_obj"]`` of ``batch[key]``)."""
    image = batch.get(key)
    names = getattr(image, "meta", {}).get("filename_or_obj", None) if image is not None else None
    if isinstance(names, str):
        return [names]
    if names is not None:
        return [str(n) for n in names]
    return ["<item without filename_or_obj>"] * (len(image) if image is not None else 1)


class IsolatingEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` that records a failing item and goes on with the next.

    Items that failed while loading arrive as records in ``batch[FAILURE_KEY]`` (from
    :class:`~medad_monai.data.IsolatedDataset` and :func:`~medad_monai.data.collate_isolated`). An
    error in the rest of the iteration (inference, post-processing, writing the outputs) is recorded
    for every item of the batch (use ``batch_size=1`` to isolate each item). Each iteration's records
    ``{"image": source, "reason": text}`` are in ``engine.state.item_failures`` when
    ``ITERATION_COMPLETED`` fires (empty when all succeeded), so a handler such as
    :class:`~medad_monai.handlers.InferenceResultsWriter` can list them; a failed iteration's
    ``engine.state.output`` is an empty list. ``KeyboardInterrupt`` and other non-``Exception`` errors
    stop the run as usual.

    Args:
        kwargs: arguments of ``monai.engines.SupervisedEvaluator``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.item_failures = []

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        batch = dict(batchdata)
        failures = list(batch.pop(FAILURE_KEY, []))
        output: Any = []
        if CommonKeys.IMAGE in batch:
            try:
                output = super()._iteration(engine, batch)
            except Exception as err:
                reason = failure_reason(err)
                failures += [{"image": source, "reason": reason} for source in _batch_sources(batch, CommonKeys.IMAGE)]
                output = []
        engine.state.item_failures = failures
        return output
