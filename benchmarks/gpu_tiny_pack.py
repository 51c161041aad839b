"""A tiny stand-in for ../shared/data/imagenette-128-webp.tar.gz, for the dry run of benchmarks/gpu_run.sh: the same
layout (`imagenette-128/{train,val}/<wnid>/*.webp` inside a .tar.gz), 10 classes, a few images each, a colour per
class with noise, so the dry run extracts, caches and trains exactly as the GPU run does, at a toy size.

    python benchmarks/gpu_tiny_pack.py OUT.tar.gz [--side 48] [--train 8] [--val 2]"""
from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
         "n03394916", "n03417042", "n03425413", "n03445777", "n03888605"]  # Imagenette's ten classes


def write_pack(out: Path, side: int, per_split: dict[str, int]) -> int:
    """Writes the .tar.gz; returns the number of images in it."""
    rng = np.random.default_rng(0)
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imagenette-128"
        for split, n in per_split.items():
            for label, wnid in enumerate(WNIDS):
                folder = root / split / wnid
                folder.mkdir(parents=True)
                colour = np.array([25 * label, 255 - 25 * label, 128], dtype=np.int16)
                for i in range(n):
                    pixels = np.clip(colour + rng.integers(-40, 40, (side, side, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{wnid}_{i}.webp", quality=80)
                    count += 1
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--side", type=int, default=48)
    ap.add_argument("--train", type=int, default=8, help="images per class in train/")
    ap.add_argument("--val", type=int, default=2, help="images per class in val/")
    args = ap.parse_args()
    n = write_pack(args.out, args.side, {"train": args.train, "val": args.val})
    print(f"wrote {n} images ({len(WNIDS)} classes) to {args.out}")


if __name__ == "__main__":
    main()
