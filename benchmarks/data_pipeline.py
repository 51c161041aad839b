"""Images per second delivered to the model (augmented, normalised batch ready on the device):
stemlab's Imagenette pipeline (uint8 cache + batched crops) vs fastai's stock DataBlock pipeline.

    python benchmarks/data_pipeline.py [--root ../shared/data/imagenette-224] [--device cpu|cuda]

Both sides train at 128 px, batch 64, on the same image folder. stemlab is timed after its cache exists
(the build, into a fresh temporary cache folder unless --cache-dir is given, is timed and sized separately;
"reopened in" is what every later run pays: listing and fingerprinting the folder, checking the cache);
fastai decodes JPEGs in `--workers` loader processes (default: all cores) with RandomResizedCrop(128,
min_scale=0.35) as item transform and aug_transforms() + Normalize as batch transforms on the device
(`--fastai-recipe imagenette`: RandomResizedCrop + FlipItem, i.e. the same augmentation as stemlab's).
With --model xresnet50 (default on CUDA) it also times a training step on random input, to say whether
the loader or the model bounds training.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rate(batches, n_batches: int, warmup: int = 2) -> float:
    """img/s over n_batches after `warmup` batches (each batch waited for on its device)."""
    it = iter(batches)

    def ready() -> int:
        nonlocal it
        try:
            x, _ = next(it)
        except StopIteration:  # next epoch
            it = iter(batches)
            x, _ = next(it)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return len(x)

    for _ in range(warmup):
        ready()
    t0 = time.perf_counter()
    seen = sum(ready() for _ in range(n_batches))
    return seen / (time.perf_counter() - t0)


def du(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in Path(p).iterdir())


def stemlab(root: Path, args, device: torch.device) -> dict:
    from experiments.data import build_data

    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="stemlab-bench-cache-"))
    cfg = {"name": "imagenette", "root": str(root), "image_size": args.image_size, "download": False,
           "cache_dir": str(cache_dir), "workers": args.workers}
    try:
        t0 = time.perf_counter()
        bundle = build_data(cfg, bs=args.bs, seed=0, device=device)
        first, build_s = time.perf_counter() - t0, bundle.info["cache_build_s"]
        t0 = time.perf_counter()
        bundle = build_data(cfg, bs=args.bs, seed=0, device=device)  # the cache exists now: what every later run pays
        reuse = time.perf_counter() - t0
        n = args.batches or len(bundle.train)
        return {"img_s": rate(bundle.train, n, warmup=2), "batches": n, "build_s": build_s,
                "first_load_s": first, "reuse_s": reuse, "cache_bytes": du(bundle.info["cache"])}
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)


def fastai_stock(root: Path, args, device: torch.device) -> dict:
    from fastai.vision.all import (CategoryBlock, DataBlock, FlipItem, GrandparentSplitter, ImageBlock, Normalize,
                                   RandomResizedCrop, aug_transforms, get_image_files, imagenet_stats, parent_label)

    rrc, norm = RandomResizedCrop(args.image_size, min_scale=0.35), Normalize.from_stats(*imagenet_stats)
    if args.fastai_recipe == "stock":  # the usual DataBlock: aug_transforms (flip, rotate, zoom, warp, lighting) on batches
        item_tfms, batch_tfms = [rrc], [*aug_transforms(), norm]
    else:  # exactly stemlab's augmentation (fastai's train_imagenette.py recipe): crop + flip per item
        item_tfms, batch_tfms = [rrc, FlipItem(0.5)], [norm]
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=GrandparentSplitter(valid_name="val"), get_y=parent_label,
                      item_tfms=item_tfms, batch_tfms=batch_tfms)
    dls = block.dataloaders(root, bs=args.bs, num_workers=args.workers or len(os.sched_getaffinity(0)), device=device)
    return {"img_s": rate(dls.train, args.fastai_batches, warmup=2), "batches": args.fastai_batches}


def model_step(args, device: torch.device) -> float:
    """img/s of xresnet50 forward+backward+SGD step on random 128 px input (the model's side of the bound)."""
    from fastai.vision.models.xresnet import xresnet50

    model = xresnet50(n_out=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.bs, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(10, (args.bs,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    steps = 30 if device.type == "cuda" else 3
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * args.bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "imagenette-224"),
                    help="Imagenette-layout folder (train/, val/); default ../shared/data/imagenette-224")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=0, help="stemlab batches to time (0: one epoch)")
    ap.add_argument("--fastai-batches", type=int, default=40, help="fastai batches to time")
    ap.add_argument("--fastai-recipe", choices=["stock", "imagenette"], default="stock",
                    help="stock: RandomResizedCrop + aug_transforms; imagenette: RandomResizedCrop + FlipItem (stemlab's augmentation)")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes for both (default: all cores)")
    ap.add_argument("--cache-dir", default=None, help="reuse this cache folder (default: a fresh temporary one)")
    ap.add_argument("--model", choices=["none", "xresnet50"], default=None,
                    help="also time an xresnet50 training step (default: on CUDA only)")
    args = ap.parse_args()
    root, device = Path(args.root).resolve(), torch.device(args.device)
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        sys.exit(f"{root} has no train/ and val/; pass --root pointing at an Imagenette-layout folder.")

    cores = len(os.sched_getaffinity(0))
    print(f"device {device}, {cores} cores, torch {torch.__version__}, root {root}, bs {args.bs}, {args.image_size} px")
    ours = stemlab(root, args, device)
    built = f"built in {ours['build_s']:.1f} s" if ours["build_s"] else "already there"
    print(f"stemlab cache: {built}, {ours['cache_bytes'] / 2**20:.0f} MiB on disk; reopened in {ours['reuse_s']:.2f} s")
    print(f"stemlab: {ours['img_s']:8.0f} img/s  ({ours['batches']} batches)")
    theirs = fastai_stock(root, args, device)
    print(f"fastai:  {theirs['img_s']:8.0f} img/s  ({theirs['batches']} batches, {args.fastai_recipe} recipe)")
    print(f"ratio stemlab/fastai: {ours['img_s'] / theirs['img_s']:.1f}x")
    if args.model == "xresnet50" or (args.model is None and device.type == "cuda"):
        model = model_step(args, device)
        bound = "loader" if ours["img_s"] < model else "model"
        print(f"xresnet50 {args.image_size} px train step: {model:.0f} img/s -> the {bound} bounds training "
              f"(stemlab loader {ours['img_s']:.0f} img/s)")


if __name__ == "__main__":
    main()
