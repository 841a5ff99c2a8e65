"""Carry batch entries (e.g. the ground-truth ``mask``) into the evaluator output."""

from __future__ import annotations

from collections.abc import Sequence

from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import ensure_tuple

__all__ = ["CopyBatchToOutput"]


class CopyBatchToOutput:
    """
    Copies ``engine.state.batch[key]`` into ``engine.state.output[key]`` right after the forward pass.

    MONAI's ``SupervisedEvaluator`` output holds only ``image``, ``label`` (the batch's ``label``) and ``pred``,
    and post-transforms write keys that exist in the batch back into the batch, so the ground-truth ``mask`` the
    pixel metrics, the threshold calibration and the visual report read from the output never gets there. This
    handler runs at ``IterationEvents.FORWARD_COMPLETED``, before MONAI decollates the output and applies the
    post-transforms (``MODEL_COMPLETED``), whatever its place in the handler list. The tensors are copied by
    reference, on the device of the batch.

    Example (bundle config, in ``val_handlers``)::

        {"_target_": "medad_monai.handlers.CopyBatchToOutput", "keys": ["mask"]}

    Args:
        keys: batch keys to copy.

    Raises:
        KeyError: when a key is missing from the batch, or the output already holds it.
    """

    def __init__(self, keys: str | Sequence[str] = "mask") -> None:
        self.keys = ensure_tuple(keys)

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: a MONAI evaluator (it registers ``IterationEvents``).
        """
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        for key in self.keys:
            if key not in batch:
                raise KeyError(f"batch has no {key!r} to copy into the output; batch keys are {sorted(batch)}.")
            if key in output:
                raise KeyError(f"the engine output already holds {key!r}; it would be overwritten.")
            output[key] = batch[key]
