"""Per-image cache of a frozen encoder's features, keyed by the image's content."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["FrozenFeatureCache"]


class FrozenFeatureCache:
    """Remembers what a frozen module returned for each image, so that a fixed image is encoded once.

    A frozen encoder gives the same features for the same image in every epoch. When the
    training images are fixed (no random augmentation, e.g. a ``CacheDataset`` of deterministic
    transforms), computing them again is wasted work; this cache stores each image's features
    and returns them the next time the same image comes.

    The key of an image is a hash (BLAKE2b, 128 bits) of its bytes, shape and dtype, so the
    cache never depends on item order, shuffling or names, and it falls back by itself:

    - an image that differs in any bit (random augmentation, other preprocessing) is a miss and
      is encoded as without the cache;
    - a change of the module's state (batch-norm calibration, ``load_state_dict``, ``.to()``)
      is seen through the parameters' and buffers' storage and version counters and empties
      the cache;
    - a module with trainable parameters, grad-requiring inputs and non-CPU tensors bypass it;
    - entries are added until ``max_bytes`` is reached; once full, a cache that has then missed
      more images in a row than it holds (random augmentation fills it with images that never
      come back) empties and switches itself off.

    Results equal those without the cache: a batch that is not entirely cached is encoded
    whole, exactly as without the cache, and the new images are stored; a batch that is
    entirely cached returns the stored features of each image. Convolution kernels give every
    image the same features in any batch of two or more images; a batch of one may use
    another algorithm whose last bits differ (about 1e-5 relative), so the features of an
    image first seen alone in a batch of one carry that difference, as they would without
    the cache when it is encoded alone.

    Args:
        max_bytes: memory budget of the stored features (0 disables the cache).

    Call ``cache(module, images)`` with ``images`` ``(B, ...)``; returns what ``module(images)``
    returns: a tensor or a list / tuple of tensors, each with the batch as its first axis.
    """

    def __init__(self, max_bytes: int = 2**31) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}.")
        self.max_bytes = int(max_bytes)
        self.enabled = self.max_bytes > 0
        self._entries: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self._bytes = 0
        self._fingerprint: tuple | None = None
        self._misses_when_full = 0
        self._returns_tensor, self._returns_list = False, True
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored features."""
        return self._bytes

    def clear(self) -> None:
        """Forget every stored entry (the cache stays enabled)."""
        self._entries.clear()
        self._bytes = 0
        self._misses_when_full = 0

    @staticmethod
    def _state_fingerprint(module: nn.Module) -> tuple | None:
        """Storage and version counter of every parameter and buffer; ``None`` when not cacheable."""
        try:
            return tuple(
                (t.data_ptr(), t._version, t.dtype, t.device)
                for t in itertools.chain(module.parameters(), module.buffers())
            )
        except RuntimeError:  # inference tensors have no version counter
            return None

    @staticmethod
    def _key(image: torch.Tensor) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(image.shape)}{image.dtype}".encode())
        digest.update(image.contiguous().view(torch.uint8).numpy().data)
        return digest.digest()

    def __call__(self, module: Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]], images: torch.Tensor):
        images = images.as_subclass(torch.Tensor) if isinstance(images, torch.Tensor) else images
        cacheable = (
            self.enabled
            and isinstance(module, nn.Module)
            and images.device.type == "cpu"
            and not images.requires_grad
            and not any(p.requires_grad for p in module.parameters())
        )
        fingerprint = self._state_fingerprint(module) if cacheable else None
        if fingerprint is None:
            return module(images)
        if fingerprint != self._fingerprint:
            self.clear()
            self._fingerprint = fingerprint
        keys = [self._key(image) for image in images]
        cached = [self._entries.get(key) for key in keys]
        if all(entry is not None for entry in cached):
            self.hits += len(keys)
            self._misses_when_full = 0
            outputs = tuple(torch.stack(scale) for scale in zip(*cached))
            return list(outputs) if self._returns_list else outputs[0] if self._returns_tensor else outputs
        outputs = module(images)
        self.misses += sum(entry is None for entry in cached)
        self._store(keys, cached, outputs)
        return outputs

    def _store(self, keys: list[bytes], cached: list, outputs) -> None:
        self._returns_tensor = isinstance(outputs, torch.Tensor)
        self._returns_list = isinstance(outputs, list)
        scales = (outputs,) if self._returns_tensor else tuple(outputs)
        for i, (key, entry) in enumerate(zip(keys, cached)):
            if entry is not None:
                continue
            size = sum(s[i].numel() * s[i].element_size() for s in scales)
            if self._bytes + size > self.max_bytes:
                self._misses_when_full += 1
                if self._misses_when_full > len(self._entries):
                    # full, and a whole cache-worth of images in a row never came back: random augmentation
                    self.clear()
                    self.enabled = False
                    return
                continue
            self._entries[key] = tuple(s[i].clone() for s in scales)
            self._bytes += size
