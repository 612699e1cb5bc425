"""`make bench`: speed and memory of the parts a researcher waits on, written to
docs/benchmarks.md.

Measures, on this machine's CPU:
- data preparation of a FairFace-layout folder (--fairface; skipped when absent), with an
  empty disk cache and with a filled one;
- synthetic face rendering per face;
- codec training throughput (images per second) for the tiny codec and the
  bmshj2018-hyperprior at quality 3 sizes, 64 px;
- the fairness callback's per-epoch summary time for 1,000 validation images;
- peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def timed(function, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_preparation(root: Path) -> list[tuple[str, str]]:
    from datamodules.prepare import prepare_data

    cache = Path(tempfile.mkdtemp(prefix="fairbits-bench-cache-"))
    data = {"name": "fairface", "root": str(root), "image_size": 128, "cache_dir": str(cache)}
    split = {"kind": "balanced"}
    try:
        cold = timed(lambda: prepare_data(data, split, 0))
        warm = timed(lambda: prepare_data(data, split, 0), repeat=3)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return [
        ("FairFace sample (572 images), prepare at 128 px, empty disk cache", f"{cold:.2f} s"),
        ("same, disk cache filled (best of 3)", f"{warm:.2f} s ({cold / warm:.0f}x faster)"),
    ]


def bench_rendering() -> list[tuple[str, str]]:
    from datamodules.synthetic_faces import SyntheticFaces

    faces = SyntheticFaces(seed=0)
    n = 200
    seconds = timed(lambda: [faces.render(i, size=64) for i in range(n)])
    return [("synthetic face rendering, 64 px", f"{1000 * seconds / n:.1f} ms per face")]


def bench_training(arch_kwargs: dict, label: str, steps: int = 10, batch: int = 16) -> tuple[str, str]:
    from lightning_modules.codec_module import CodecModule

    model = CodecModule(**arch_kwargs, lmbda=0.0067, lr_scheduler="none")
    main, aux = model.configure_optimizers()
    x = torch.rand(batch, 3, 64, 64)

    def step():
        output = model(x)
        loss = model.rate_distortion_loss(x, output)["loss"] + model.model.aux_loss()
        main.zero_grad()
        aux.zero_grad()
        loss.backward()
        main.step()
        aux.step()

    step()  # warm-up: allocator and kernel selection
    seconds = timed(lambda: [step() for _ in range(steps)])
    return (f"training, {label}, batch {batch} at 64 px", f"{steps * batch / seconds:.1f} images/s")


def bench_callback(n_images: int = 1000) -> tuple[str, str]:
    from callbacks.fairness_callback import FairnessCallback

    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(7)]
    rows = [{"sample_id": f"s{i}", "group": groups[i % 7], "psnr": float(rng.normal(30, 2)),
             "ms_ssim": float(rng.uniform(0.8, 1)), "bpp": float(rng.uniform(0.05, 0.2)),
             "bpp_est": float(rng.uniform(0.05, 0.2))} for i in range(n_images)]
    with tempfile.TemporaryDirectory() as out:
        callback = FairnessCallback(out, groups, n_resamples=1000)
        middle = timed(lambda: callback.summarize_epoch(rows, epoch=0, final=False))
        final = timed(lambda: callback.summarize_epoch(rows, epoch=1, final=True))
    return (f"fairness callback summary, {n_images} images, 7 groups, 4 metrics",
            f"{middle:.2f} s per epoch, {final:.2f} s at the last epoch (with tests)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fairbits benchmarks.")
    parser.add_argument("--fairface", type=Path, default=REPO.parent / "shared" / "data" / "fairface_sample",
                        help="a FairFace-layout folder for the preparation benchmark (skipped if absent)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    results: list[tuple[str, str]] = []
    if args.fairface.is_dir():
        results += bench_preparation(args.fairface)
    results += bench_rendering()
    results.append(bench_training({"arch": "bmshj2018-factorized", "N": 16, "M": 16}, "tiny factorized N=M=16"))
    results.append(bench_training({"arch": "bmshj2018-hyperprior", "quality": 3}, "bmshj2018-hyperprior quality 3",
                                  steps=3))
    results.append(bench_callback())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run_all`). Timings are wall-clock seconds "
        "on the machine below, single process, best of repeated runs where stated.",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- date: {time.strftime('%Y-%m-%d')}",
        "",
        "| what | result |",
        "|---|---|",
        *[f"| {what} | {result} |" for what, result in results],
        f"| peak resident memory of the benchmark process | {peak_mib:.0f} MiB |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
