"""Encoder weights: "imagenet" through torch.hub's cache, local files, URLs, "random", and their recorded source.

No test reaches the network: torch.hub's cache is a temporary folder and every download attempt either
raises ``URLError`` or is answered from bytes the test serves.
"""

from __future__ import annotations

import email.message
import hashlib
import io
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader
from monai.networks.nets import resnet18, resnet34
from monai.networks.utils import copy_model_state
from torch import nn

from medad_monai.networks.blocks.encoder import IMAGENET_WEIGHTS, ResNetFeatureEncoder

UNRECORDED = "unrecorded (loaded from a checkpoint saved without weights_source)"


class _Response(io.BytesIO):
    """What ``urlopen`` returns, as far as ``torch.hub.download_url_to_file`` reads it."""

    def info(self) -> email.message.Message:
        return email.message.Message()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch.hub's directory in ``tmp_path``; downloads answer only URLs put in ``served``, others raise URLError."""
    hub_dir = tmp_path / "hub"
    served: dict[str, bytes] = {}
    requested: list[str] = []

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        requested.append(url)
        if url in served:
            return _Response(served[url])
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return SimpleNamespace(checkpoints=hub_dir / "checkpoints", served=served, requested=requested)


def _torchvision_state(net_fn=resnet18, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = net_fn(spatial_dims=2, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False, num_classes=1000)
    return net.state_dict()


def _serialized(state: dict[str, torch.Tensor]) -> tuple[bytes, str]:
    """The bytes ``torch.save`` writes for ``state`` and their sha256 hex digest."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _assert_weights_equal(encoder: ResNetFeatureEncoder, state: dict[str, torch.Tensor]) -> None:
    """Every encoder tensor equals the torchvision-format tensor it was loaded from."""
    stem = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    compared = 0
    for key, value in encoder.state_dict().items():
        if key in ("bn_calibrated", "_extra_state"):
            continue
        for ours, theirs in stem.items():
            key = key.replace(ours, theirs)
        if key.startswith("layers."):
            index, rest = key[len("layers.") :].split(".", 1)
            key = f"layer{int(index) + 1}.{rest}"
        assert torch.equal(value, state[key]), key
        compared += 1
    assert compared > 50


def _imagenet18(hub, monkeypatch, data: bytes | None, digest: str) -> tuple[str, object]:
    """Point IMAGENET_WEIGHTS[18] at a file named after ``digest``; put ``data`` in the hub cache if given."""
    name = f"resnet18-{digest[:8]}.pth"
    url = f"https://download.pytorch.org/models/{name}"
    monkeypatch.setitem(IMAGENET_WEIGHTS, 18, url)
    if data is not None:
        hub.checkpoints.mkdir(parents=True, exist_ok=True)
        (hub.checkpoints / name).write_bytes(data)
    return url, hub.checkpoints / name


def test_imagenet_table_names_torchvision_files():
    assert IMAGENET_WEIGHTS == {
        18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
    }


def test_local_torchvision_checkpoint_loads_from_path(hub, tmp_path):
    state = _torchvision_state(resnet34)
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    encoder = ResNetFeatureEncoder(34, (1, 2, 3), weights=str(path))
    _assert_weights_equal(encoder, state)
    assert bool(encoder.bn_calibrated)
    assert encoder.weights_source == f"file:{path.resolve()} (sha256 {digest[:8]})"
    assert hub.requested == []
    features = encoder(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]


@pytest.mark.parametrize("weights", ["random", None])
def test_random_and_none_are_the_same(hub, weights):
    encoder = ResNetFeatureEncoder(18, (1,), weights=weights)
    assert encoder.weights_source == "random"
    assert not bool(encoder.bn_calibrated)
    assert hub.requested == []


def test_imagenet_in_cache_with_matching_hash_loads_offline(hub, monkeypatch):
    state = _torchvision_state()
    data, digest = _serialized(state)
    _, cached = _imagenet18(hub, monkeypatch, data, digest)
    encoder = ResNetFeatureEncoder(18, weights="imagenet")
    assert hub.requested == []
    _assert_weights_equal(encoder, state)
    assert bool(encoder.bn_calibrated)
    assert encoder.weights_source == f"imagenet:{cached.name}"


def test_imagenet_in_cache_with_wrong_hash_is_refused(hub, monkeypatch):
    data, digest = _serialized(_torchvision_state())
    wrong = "11111111" if digest.startswith("00000000") else "00000000"
    url, cached = _imagenet18(hub, monkeypatch, data, wrong)
    with pytest.raises(RuntimeError, match="sha256") as info:
        ResNetFeatureEncoder(18, weights="imagenet")
    message = str(info.value)
    assert str(cached) in message and "delete it" in message and url in message
    assert hub.requested == []


def test_imagenet_missing_offline_says_where_to_put_it(hub, monkeypatch):
    cached = hub.checkpoints / "resnet34-b627a593.pth"
    with pytest.raises(RuntimeError) as info:
        ResNetFeatureEncoder(34, weights="imagenet")
    message = str(info.value)
    assert str(cached) in message
    assert IMAGENET_WEIGHTS[34] in message
    assert '"random"' in message and "--network_def#encoder_weights random" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert hub.requested == [IMAGENET_WEIGHTS[34]]
    assert not cached.exists()


def test_imagenet_download_checks_the_hash(hub, monkeypatch):
    state = _torchvision_state()
    data, digest = _serialized(state)
    url, cached = _imagenet18(hub, monkeypatch, None, digest)
    hub.served[url] = data[:-1] + bytes([data[-1] ^ 1])  # one flipped bit
    with pytest.raises(RuntimeError, match="invalid hash value") as info:
        ResNetFeatureEncoder(18, weights="imagenet")
    assert str(cached) in str(info.value)
    assert not cached.exists() and not list(hub.checkpoints.glob("*.partial"))

    hub.served[url] = data
    encoder = ResNetFeatureEncoder(18, weights="imagenet")
    _assert_weights_equal(encoder, state)
    assert cached.read_bytes() == data
    assert encoder.weights_source == f"imagenet:{cached.name}"
    hub.served.clear()
    requests = len(hub.requested)
    ResNetFeatureEncoder(18, weights="imagenet")  # now from the cache
    assert len(hub.requested) == requests


def test_explicit_url(hub):
    state = _torchvision_state()
    data, digest = _serialized(state)
    url = "https://example.org/weights/my_resnet18.pth"
    with pytest.raises(RuntimeError, match="local path") as info:
        ResNetFeatureEncoder(18, weights=url)
    assert str(hub.checkpoints / "my_resnet18.pth") in str(info.value) and "random" in str(info.value)
    hub.served[url] = data
    encoder = ResNetFeatureEncoder(18, weights=url)
    _assert_weights_equal(encoder, state)
    assert bool(encoder.bn_calibrated)
    assert encoder.weights_source == f"url:{url} (sha256 {digest[:8]})"


def test_unknown_value_lists_accepted_forms(hub):
    with pytest.raises(FileNotFoundError) as info:
        ResNetFeatureEncoder(18, weights="imagenet21k")
    message = str(info.value)
    assert "'imagenet21k'" in message
    assert all(form in message for form in ("'imagenet'", "'random'", "None", "local", "URL"))
    assert hub.requested == []


def test_weights_source_survives_a_weights_only_round_trip(hub, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state(), path)
    encoder = ResNetFeatureEncoder(18, weights=path)
    saved = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), saved)
    state = torch.load(saved, weights_only=True)
    assert isinstance(state["_extra_state"], torch.Tensor)
    restored = ResNetFeatureEncoder(18)
    restored.load_state_dict(state, strict=True)
    assert restored.weights_source == encoder.weights_source
    assert bool(restored.bn_calibrated)
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), encoder.parameters()))


def test_monai_checkpoint_loader_and_copy_model_state_restore_the_encoder(hub, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state(), path)
    trained = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18, weights=path)})
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": trained.state_dict()}, checkpoint)
    restored = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18)})
    CheckpointLoader(str(checkpoint), {"model": restored})(Engine(lambda engine, batch: None))
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), trained.parameters()))
    assert restored["encoder"].weights_source == trained["encoder"].weights_source
    # copy_model_state (monai.bundle.load, CheckpointLoader(strict_shape=False)) compares the shapes of all
    # state-dict values: the record is a tensor, so it works; a record of another length is not copied.
    copied = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18)})
    copy_model_state(copied, torch.load(checkpoint, weights_only=True)["model"])
    assert all(torch.equal(a, b) for a, b in zip(copied.parameters(), trained.parameters()))
    assert copied["encoder"].weights_source == "random"


def test_state_dict_without_extra_state_still_loads(hub, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state(), path)
    trained = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18, weights=path)})
    old = {k: v for k, v in trained.state_dict().items() if not k.endswith("_extra_state")}
    assert len(old) == len(trained.state_dict()) - 1
    restored = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18)})
    result = restored.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), trained.parameters()))
    assert restored["encoder"].weights_source == UNRECORDED
    # a state dict with nothing of the encoder in it leaves the record alone.
    untouched = nn.ModuleDict({"encoder": ResNetFeatureEncoder(18)})
    untouched.load_state_dict({}, strict=False)
    assert untouched["encoder"].weights_source == "random"
