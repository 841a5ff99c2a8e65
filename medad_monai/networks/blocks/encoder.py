"""Frozen multi-scale ResNet feature encoder built on MONAI's ResNet.

With ``spatial_dims=2, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False``
MONAI's ``resnet18`` / ``resnet34`` have the same state-dict keys, shapes and
forward computation as torchvision's, so ImageNet checkpoints saved in
torchvision format load without torchvision installed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import resnet18, resnet34
from torch import nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

__all__ = ["ENCODER_CHANNELS", "IMAGENET_WEIGHTS", "ResNetFeatureEncoder", "load_encoder_state_dict"]

_RESNETS = {18: resnet18, 34: resnet34}
#: Output channels of ``layer1`` .. ``layer4`` for the supported (basic-block) ResNets.
ENCODER_CHANNELS = (64, 128, 256, 512)
#: torchvision's ImageNet-1k checkpoints (``ResNet18_Weights.IMAGENET1K_V1`` and
#: ``ResNet34_Weights.IMAGENET1K_V1`` in ``torchvision/models/resnet.py``), by ResNet depth.
#: Each file name ends in the first 8 hex digits of the file's sha256 (torch.hub's naming convention);
#: the hash is checked on download and, for a file already in torch.hub's cache, before loading it.
IMAGENET_WEIGHTS = {
    18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
}
_ACCEPTED = (
    "'imagenet' (torchvision's ImageNet weights through torch.hub's cache), 'random' or None (random "
    "initialisation), the path of a local torchvision-format checkpoint, or an explicit http(s) URL"
)
_CHOOSE_RANDOM = (
    'choose the randomly initialised encoder explicitly: encoder_weights: "random" in the bundle config, '
    "or --network_def#encoder_weights random on the command line"
)
_UNRECORDED = "unrecorded (loaded from a checkpoint saved without weights_source)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def _hub_load(url: str, cached: Path, advice: str) -> Mapping[str, Any]:
    """Load ``url`` through torch.hub's cache file ``cached``; a failed download raises ``RuntimeError(advice)``."""
    present = cached.is_file()
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=str(cached.parent), map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch a RuntimeError
        if present:  # nothing was downloaded
            raise
        raise RuntimeError(f"{advice} (download error: {err})") from err


def _imagenet_state_dict(depth: int) -> tuple[Mapping[str, Any], str]:
    url = IMAGENET_WEIGHTS[depth]
    cached = _hub_file(url)
    match = torch.hub.HASH_REGEX.search(cached.name)
    if match is None or len(match.group(1)) < 8:
        raise ValueError(f"IMAGENET_WEIGHTS[{depth}] = {url!r} does not end in '-<sha256 prefix>.<ext>'.")
    prefix = match.group(1)
    if cached.is_file():  # torch.hub checks the hash only while downloading
        digest = _sha256(cached)
        if not digest.startswith(prefix):
            raise RuntimeError(
                f"{cached} is not torchvision's {cached.name}: its sha256 starts with {digest[:8]}, expected "
                f"{prefix}. The file is damaged or another checkpoint: delete it to download it again, or place "
                f"the correct file from {url} there."
            )
    state = _hub_load(
        url,
        cached,
        f"the ImageNet weights of resnet{depth} ({cached.name}) are not in torch.hub's cache and could not be "
        f"downloaded. Download {url} on a machine with internet access and put the file at {cached} (its sha256 "
        f"must start with {prefix}), or {_CHOOSE_RANDOM}.",
    )
    return state, f"imagenet:{cached.name}"


def _url_state_dict(url: str) -> tuple[Mapping[str, Any], str]:
    cached = _hub_file(url)
    state = _hub_load(
        url,
        cached,
        f"could not download encoder weights from {url!r}. On an offline machine, download the file elsewhere and "
        f"put it at {cached} (torch.hub's cache) or set the encoder weights to its local path; or {_CHOOSE_RANDOM}.",
    )
    return state, f"url:{url} (sha256 {_sha256(cached)[:8]})"


def load_encoder_state_dict(
    weights: str | os.PathLike | None, depth: int = 34
) -> tuple[Mapping[str, torch.Tensor] | None, str]:
    """Resolve an encoder weights choice to a torchvision-format ResNet state dict and its provenance.

    Args:
        weights: one of

            - ``"random"`` or ``None`` (the same): no state dict, the caller keeps its (seeded) random initialisation;
            - ``"imagenet"``: torchvision's ImageNet checkpoint of ``resnet{depth}`` (:data:`IMAGENET_WEIGHTS`),
              downloaded by ``torch.hub.load_state_dict_from_url(check_hash=True)`` into
              ``torch.hub.get_dir()/checkpoints``. A file already there is loaded without network access after
              its sha256 prefix is checked;
            - the path of a local checkpoint file (read with ``torch.load(weights_only=True)``; a ``str`` equal
              to a keyword is the keyword, write ``./random`` for a file of that name);
            - an explicit ``http(s)`` URL, fetched into torch.hub's cache because the caller named it (a file
              name ``name-<sha256 prefix>.ext`` is hash-checked on download).

            Checkpoints that wrap the weights under ``"state_dict"`` or ``"model"`` are unwrapped.
        depth: ResNet depth (18 or 34) whose ImageNet weights ``"imagenet"`` means.

    Returns:
        ``(state_dict, source)``: ``state_dict`` is ``None`` for a random encoder; ``source`` is ``"random"``,
        ``"imagenet:<file name>"``, ``"file:<absolute path> (sha256 <8 hex digits>)"`` or
        ``"url:<url> (sha256 <8 hex digits>)"``.

    Raises:
        RuntimeError: ImageNet or URL weights that cannot be downloaded (offline, hash mismatch), or a cached
            ImageNet file whose sha256 does not match; the message says which file to put where.
        FileNotFoundError: ``weights`` is neither a keyword, an existing file nor a URL.
        ValueError: the file holds no state dict, or ``depth`` has no ImageNet weights.
    """
    if weights is None or (isinstance(weights, str) and weights == "random"):
        return None, "random"
    if isinstance(weights, str) and weights == "imagenet":
        if depth not in IMAGENET_WEIGHTS:
            raise ValueError(f"no ImageNet weights for depth {depth}; known depths: {sorted(IMAGENET_WEIGHTS)}.")
        state, source = _imagenet_state_dict(depth)
    elif isinstance(weights, str) and weights.startswith(("http://", "https://")):
        state, source = _url_state_dict(weights)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights {os.fspath(weights)!r}: no such file. Accepted: {_ACCEPTED}.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        source = f"file:{path.resolve()} (sha256 {_sha256(path)[:8]})"
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ValueError(f"encoder weights {source!r} do not contain a state dict (got {type(state).__name__}).")
    return state, source


class ResNetFeatureEncoder(nn.Module):
    """Multi-scale features of a (by default frozen) ResNet18/34.

    Args:
        depth: 18 or 34.
        out_stages: which residual stages to return, 1-based (``layer1`` = 1, stride 4).
        in_channels: input channels (3 for ImageNet weights).
        weights: ``"random"`` (random initialisation, seeded by the caller; ``None`` means the same),
            ``"imagenet"`` (torchvision's ImageNet weights of this depth through torch.hub's cache, hash
            checked; offline and not cached, a ``RuntimeError`` says which file to put where), the path of a
            local torchvision-format checkpoint, or an explicit ``http(s)`` URL. See :func:`load_encoder_state_dict`.
        frozen: freeze all parameters and keep batch-norm statistics fixed in training.

    Input ``(B, in_channels, H, W)``; output a list with one tensor per stage in
    ``out_stages``: stage ``s`` has shape ``(B, ENCODER_CHANNELS[s - 1], H / 2**(s + 1), W / 2**(s + 1))``.

    ``weights_source`` records what the weights were built from (``"random"``, ``"imagenet:<file name>"``,
    ``"file:<absolute path> (sha256 <8 hex digits>)"``, ``"url:<url> (sha256 <8 hex digits>)"``). It is
    saved in state dicts as the encoder's extra state (``<prefix>_extra_state``, a ``uint8`` tensor of its
    UTF-8 bytes, so ``torch.load(weights_only=True)`` and MONAI's ``copy_model_state`` handle it) and
    restored by ``load_state_dict``; ``copy_model_state`` copies it only onto a record of the same length,
    like any tensor. A state dict saved before this record existed still loads, also with ``strict=True``;
    ``weights_source`` then says the origin is unrecorded.
    """

    def __init__(
        self,
        depth: int = 34,
        out_stages: Sequence[int] = (1, 2, 3),
        in_channels: int = 3,
        weights: str | os.PathLike | None = "random",
        frozen: bool = True,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"depth must be one of {sorted(_RESNETS)}, got {depth}.")
        stages = tuple(int(s) for s in out_stages)
        if not stages or sorted(set(stages)) != list(stages) or not set(stages) <= {1, 2, 3, 4}:
            raise ValueError(f"out_stages must be increasing stage numbers within 1..4, got {tuple(out_stages)}.")
        resnet = _RESNETS[depth](
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            bias_downsample=False,
            num_classes=1000,
        )
        state, self.weights_source = load_encoder_state_dict(weights, depth)
        if state is not None:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"encoder weights {self.weights_source!r} do not match resnet{depth}: "
                    f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
                )
        self.out_stages = stages
        self.out_channels = tuple(ENCODER_CHANNELS[s - 1] for s in stages)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, resnet.maxpool)
        # stages beyond the last requested one are dropped: they would only cost memory.
        self.layers = nn.ModuleList(getattr(resnet, f"layer{s}") for s in range(1, stages[-1] + 1))
        self.frozen = frozen
        # persistent flag: checkpoints remember whether the batch-norm statistics were calibrated.
        self.register_buffer("bn_calibrated", torch.tensor(state is not None))
        if frozen:
            self.requires_grad_(False)
            self.eval()

    @torch.no_grad()
    def calibrate_batch_norm(self, images: Iterable[torch.Tensor]) -> None:
        """Set every batch-norm layer's running statistics to the mean/variance over ``images``.

        Without pretrained weights (none can be downloaded on an offline machine)
        a randomly initialised ResNet's activations grow with depth (``layer3``
        is ~40x ``layer1`` for default initialisation), so a reconstruction loss
        is dominated by the deepest scale. Estimating the statistics on normal
        training images standardises every stage; it uses training data only and
        is a no-op for users who load pretrained weights (they skip it).

        Args:
            images: batches ``(B, C, H, W)`` of normal training images.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m, m.momentum) for m in norms]
        was_training = self.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: exact mean over all batches
        nn.Module.train(self, True)
        seen = 0
        try:
            for batch in images:
                self.forward(batch.to(self.bn_calibrated.device))
                seen += batch.shape[0]
        finally:
            for m, momentum in saved:
                m.momentum = momentum
            self.train(was_training)
        if seen == 0:
            raise ValueError("calibrate_batch_norm needs at least one batch of images, got none.")
        self.bn_calibrated.fill_(True)

    def get_extra_state(self) -> torch.Tensor:
        """``weights_source`` as a ``uint8`` tensor of its UTF-8 bytes (saved by ``state_dict``)."""
        return torch.tensor(list(self.weights_source.encode("utf-8")), dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Restore ``weights_source`` from a tensor written by :meth:`get_extra_state`."""
        self.weights_source = bytes(state.tolist()).decode("utf-8")

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        key = prefix + _EXTRA_STATE_KEY_SUFFIX
        if key not in state_dict:
            # a checkpoint saved before weights_source existed: its weights load, their origin is unknown.
            if key in missing_keys:
                missing_keys.remove(key)
            if any(k.startswith(prefix) for k in state_dict):
                self.weights_source = _UNRECORDED

    def train(self, mode: bool = True) -> ResNetFeatureEncoder:
        """Keep a frozen encoder in eval mode so its batch-norm statistics never change."""
        return super().train(mode and not self.frozen)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(x)
        for stage, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if stage in self.out_stages:
                features.append(x)
        return features
