"""SP-Mamba on a CUDA device: mamba-ssm's scan kernel against the pure-PyTorch scan.

On the same weights (seeded random ones, or a bundle checkpoint given with
``--checkpoint``), for the selective-scan backends ``"cuda"`` (mamba-ssm's kernel) and
``"torch"`` (this project's chunked scan), prints:

1. the parity of the eval-mode anomaly maps (B, 1, H, W) on one batch: largest absolute
   and relative difference, and the correlation of the two maps;
2. inference throughput in images per second (``torch.no_grad``, eval mode);
3. training throughput in images per second (forward, loss, backward, AdamW step).

Times are CUDA-event medians over interleaved repeats after warm-up; the encoder's
batch-norm statistics are calibrated on the random batch when no checkpoint is given.
The issue's figure is batch 16 at 256 x 256.

Example::

    python scripts/bench_sp_mamba_gpu.py --image-size 256 --batch 16
    python scripts/bench_sp_mamba_gpu.py --image-size 64 --checkpoint bundles/sp_mamba/models/model.pt
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from medad_monai.detectors import SPMamba, SPMambaLoss
from medad_monai.ops.selective_scan import available_backends

BACKENDS = ("cuda", "torch")


def cuda_seconds(fn: Callable[[], object]) -> float:
    """Wall time of ``fn`` on the current CUDA stream, measured with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def build_models(image_size: int, checkpoint: str | None, images: torch.Tensor) -> dict[str, SPMamba]:
    """One SP-Mamba per backend, all holding the same weights."""
    torch.manual_seed(0)
    models = {name: SPMamba(image_size=(image_size, image_size), scan_backend=name).cuda() for name in BACKENDS}
    first = models[BACKENDS[0]]
    if checkpoint:
        state = torch.load(checkpoint, map_location="cuda", weights_only=True)
        first.load_state_dict(state.get("model", state))
    else:
        first.encoder.calibrate_batch_norm([images])
    for name in BACKENDS[1:]:
        models[name].load_state_dict(first.state_dict())
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--checkpoint", default=None, help="bundle checkpoint (models/model.pt) to load")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    if "cuda" not in available_backends():
        parser.error("mamba-ssm's selective_scan_fn does not import here: install the 'cuda' extra")

    torch.backends.cudnn.benchmark = True
    generator = torch.Generator(device="cuda").manual_seed(1)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device="cuda", generator=generator)
    models = build_models(args.image_size, args.checkpoint, images)
    print(f"SP-Mamba {args.image_size}x{args.image_size}, batch {args.batch}, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}, weights: {args.checkpoint or 'random (seed 0), batch-norm calibrated'}")

    with torch.no_grad():
        maps = {name: model.eval()(images).float() for name, model in models.items()}
    diff = (maps["cuda"] - maps["torch"]).abs()
    scale = maps["torch"].abs().max()
    corr = torch.corrcoef(torch.stack([maps["cuda"].flatten(), maps["torch"].flatten()]))[0, 1]
    print(f"anomaly-map parity cuda vs torch, shape {tuple(maps['torch'].shape)}: max |diff| {diff.max():.2e} "
          f"({diff.max() / scale:.2e} of the map's max {scale:.3f}), mean |diff| {diff.mean():.2e}, "
          f"correlation {corr:.8f}")

    loss_fn = SPMambaLoss()
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
        for name, m in models.items()
    }

    def infer(name: str) -> None:
        with torch.no_grad():
            models[name](images)

    def train_step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        loss_fn(models[name](images)).backward()
        optimizers[name].step()

    rows = []
    for label, mode, step in (("inference", "eval", infer), ("training", "train", train_step)):
        for model in models.values():
            model.train(mode == "train")
        for name in BACKENDS:  # warm-up: cuDNN autotuning, kernel compilation, allocator
            for _ in range(3):
                step(name)
        torch.cuda.synchronize()
        samples: dict[str, list[float]] = {name: [] for name in BACKENDS}
        for _ in range(args.repeats):
            for name in BACKENDS:
                samples[name].append(cuda_seconds(lambda: step(name)))
        for name in BACKENDS:
            seconds = statistics.median(samples[name])
            rows.append((label, name, 1e3 * seconds, args.batch / seconds))
    print(f"median of {args.repeats} repeats:")
    print(f"{'mode':<10} {'backend':<8} {'ms/batch':>10} {'images/s':>10}")
    for label, name, ms, ips in rows:
        print(f"{label:<10} {name:<8} {ms:>10.1f} {ips:>10.1f}")
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
