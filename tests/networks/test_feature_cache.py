"""FrozenFeatureCache: per-image features of a frozen encoder, keyed by content, with automatic fallbacks."""

from __future__ import annotations

import torch

from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss
from medad_monai.networks.blocks import FrozenFeatureCache, ResNetFeatureEncoder


class Counting(torch.nn.Module):
    """A frozen encoder that counts the images it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ResNetFeatureEncoder(18, (1, 2))
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.encoder(x)


def test_cached_features_equal_fresh_ones_and_are_computed_once():
    torch.manual_seed(0)
    module, cache = Counting(), FrozenFeatureCache()
    images = torch.randn(6, 3, 32, 32)
    first = cache(module, images[:3])
    assert module.seen == 3 and len(cache) == 3 and isinstance(first, list)
    again = cache(module, images[[2, 0, 1]])  # same images, other order: all hits
    assert module.seen == 3 and cache.hits == 3
    for a, b in zip(again, module.encoder(images[[2, 0, 1]])):
        assert torch.equal(a, b)
    mixed = cache(module, images[2:5])  # partly cached: the whole batch is encoded, as without the cache
    assert module.seen == 6 and len(cache) == 5
    for a, b in zip(mixed, module.encoder(images[2:5])):
        assert torch.equal(a, b)
    altered = images[:3].clone()
    altered[0, 0, 0, 0] += 1e-6  # one changed value is another image
    cache(module, altered)
    assert module.seen == 9


def test_state_changes_empty_the_cache():
    torch.manual_seed(0)
    module, cache = Counting(), FrozenFeatureCache()
    images = torch.randn(4, 3, 32, 32)
    cache(module, images)
    module.encoder.calibrate_batch_norm([images])  # batch-norm statistics change in place
    fresh = cache(module, images)
    assert module.seen == 8
    for a, b in zip(fresh, module.encoder(images)):
        assert torch.equal(a, b)
    module.load_state_dict(module.state_dict())
    cache(module, images)
    assert module.seen == 12


def test_bypass_for_trainable_modules_and_disabled_cache():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    trainable, cache = Counting(), FrozenFeatureCache()
    trainable.requires_grad_(True)
    cache(trainable, images)
    cache(trainable, images)
    assert trainable.seen == 4 and len(cache) == 0
    off, module = FrozenFeatureCache(0), Counting()
    off(module, images)
    off(module, images)
    assert module.seen == 4 and len(off) == 0


def test_budget_and_augmentation_switch_the_cache_off():
    torch.manual_seed(0)
    module = Counting()
    per_image = sum(f[0].numel() * 4 for f in module(torch.randn(1, 3, 32, 32)))
    cache = FrozenFeatureCache(max_bytes=3 * per_image)
    for _ in range(3):  # random augmentation: every batch holds new images
        cache(module, torch.randn(2, 3, 32, 32))
    assert len(cache) == 3 and cache.nbytes == 3 * per_image and cache.enabled
    for _ in range(2):
        cache(module, torch.randn(2, 3, 32, 32))
    assert not cache.enabled and len(cache) == 0  # full, and more misses in a row than entries


def test_training_with_the_cache_matches_training_without():
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    results = []
    for cache_bytes in (0, 2**30):
        torch.manual_seed(0)
        net = SPMamba(image_size=(64, 64), encoder_depth=18, decoder_depths=(1, 1, 1, 1), d_state=4,
                      drop_path_rate=0.0, feature_cache_bytes=cache_bytes)
        net.encoder.calibrate_batch_norm([images])
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
        losses = []
        for epoch in range(3):
            order = torch.randperm(8, generator=torch.Generator().manual_seed(epoch))
            for i in range(0, 8, 4):
                loss = SPMambaLoss()(net.train()(images[order[i : i + 4]]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        with torch.no_grad():
            results.append((losses, net.eval()(images)))
        if cache_bytes:
            assert net.feature_cache.hits == 2 * 8 + 8 and net.feature_cache.misses == 8
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
