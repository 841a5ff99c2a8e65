"""Per-item failure isolation for inference: an item that cannot be read or preprocessed becomes a failure
record instead of stopping the data loader, so one bad file never costs the others their outputs."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.data import Dataset, list_data_collate

__all__ = ["FAILURE_KEY", "IsolatedDataset", "collate_isolated", "failure_reason", "item_source"]

#: Key of the failure records ``{"image": source, "reason": text}`` in items and batches.
FAILURE_KEY = "failures"

# MONAI re-raises errors from transforms and config items wrapped in these; the cause says what went wrong.
_WRAPPERS = ("applying transform", "Failed to evaluate", "Failed to instantiate")


def failure_reason(err: BaseException) -> str:
    """``"<type>: <message>"`` of the error that says what went wrong: the first in ``err``'s chain of
    causes that is not one of MONAI's wrappers (``RuntimeError("applying transform ...")``)."""
    while err.__cause__ is not None and any(str(err).startswith(w) for w in _WRAPPERS):
        err = err.__cause__
    return f"{type(err).__name__}: {str(err).strip()}"


def item_source(item: Mapping[Hashable, Any], key: str = "image") -> str:
    """The file(s) an item's ``key`` names, as text: a path, or the first path and the count of a list."""
    value = item.get(key, "<no image>")
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, Sequence) and value:
        return f"{os.fspath(value[0])} (+{len(value) - 1} files)" if len(value) > 1 else os.fspath(value[0])
    return repr(value)


class IsolatedDataset(Dataset):
    """``monai.data.Dataset`` whose items fail one by one.

    An item whose ``transform`` raises (a file that cannot be read, a preset that refuses it) is
    returned as ``{FAILURE_KEY: [{"image": source, "reason": text}]}`` (:func:`item_source`,
    :func:`failure_reason`) instead of stopping the loader. Batch with :func:`collate_isolated`, and
    run with :class:`~medad_monai.engines.IsolatingEvaluator`, which records the failures.

    Args:
        data: items (dicts with ``image_key``).
        transform: per-item transform.
        image_key: the key that names the item's file in failure records.
    """

    def __init__(self, data: Sequence[Mapping], transform: Any = None, image_key: str = "image") -> None:
        super().__init__(data, transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as err:
            source = item_source(self.data[index], self.image_key)
            return {FAILURE_KEY: [{"image": source, "reason": failure_reason(err)}]}


def collate_isolated(batch: Sequence[Mapping]) -> dict:
    """Collate the good items of ``batch`` with ``monai.data.list_data_collate`` and list the failure
    records of the others under :data:`FAILURE_KEY` (empty when none failed)."""
    good = [item for item in batch if FAILURE_KEY not in item]
    collated = dict(list_data_collate(good)) if good else {}
    collated[FAILURE_KEY] = [record for item in batch for record in item.get(FAILURE_KEY, [])]
    return collated
