"""`data=mnist`: the full MNIST (60,000 train / 10,000 test digits), in torchvision's layout and read by its reader.

The four idx files (`train-images-idx3-ubyte`, ...) are looked for in `<data.root>/MNIST/raw` (where
torchvision's `datasets.MNIST` downloads them), then in `<data.root>/raw` and `<data.root>` itself; when
missing and `data.download` allows it, torchvision downloads them. 47 MB of uint8 fit in memory: no cache.
"""
from __future__ import annotations

from pathlib import Path

import torch

from stems.base import error_line

from . import DataBundle, DataError, Part, dataset, holdout, not_created, split_loaders
from .cache import user_cache_dir
from .mnist5k import MNIST_MEAN, MNIST_STD

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DOWNLOAD = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def find_raw(root: Path) -> Path | None:
    for path in (root / "MNIST" / "raw", root / "raw", root):
        if all((path / f).is_file() for pair in FILES.values() for f in pair):
            return path
    return None


def download(root: Path) -> None:
    """torchvision's downloader (mirrors, checksums, gunzip into root/MNIST/raw)."""
    from torchvision.datasets import MNIST

    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def find_or_download(cfg) -> Path:
    root = Path(cfg.get("root") or user_cache_dir() / "data").expanduser()
    raw = find_raw(root)
    if raw is not None:
        return raw
    why = "data.download is false" if not cfg.get("download", True) else not_created(cfg)
    if why is None:
        try:
            download(root)
            raw = find_raw(root)
            if raw is not None:
                return raw
            why = f"the download left no idx files in {root / 'MNIST' / 'raw'}"
        except Exception as e:  # offline, DNS, disk full, bad checksum: all end in the same advice
            why = f"the download failed ({error_line(e, 'no message')})"
    raise DataError(f"MNIST not found (looked for {FILES['train'][0]} and the 3 other idx files in {root / 'MNIST' / 'raw'}, "
                    f"{root / 'raw'} and {root}) and {why}; download the four *-ubyte.gz files from {DOWNLOAD}, gunzip "
                    f"them into /path/to/MNIST/raw, and run with data.root=/path/to.")


def read_split(raw: Path, split: str) -> Part:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images_file, labels_file = (raw / f for f in FILES[split])
    try:
        images, labels = read_image_file(str(images_file)), read_label_file(str(labels_file))
    except Exception as e:  # truncated or not an idx file
        raise DataError(f"{images_file} or {labels_file} is not a valid idx file ({type(e).__name__}: {e}); "
                        f"delete them so they download again.") from e
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{images_file} holds {tuple(images.shape)} images for {len(labels)} labels in {labels_file}; "
                        f"replace both with a matching pair.")
    return Part(images.unsqueeze(1).contiguous(), labels.long())


@dataset("mnist")
def mnist(cfg, bs: int, seed: int, device: torch.device) -> DataBundle:
    raw = find_or_download(cfg)
    fit_on, valid_on, split = holdout(cfg, seed, read_split(raw, "train"), lambda: read_split(raw, "test"))
    train, valid = split_loaders(fit_on, valid_on, bs=bs, seed=seed, device=device, mean=MNIST_MEAN, std=MNIST_STD)
    return DataBundle(train, valid, in_channels=1, num_classes=10, image_size=int(fit_on.images.shape[-1]),
                      info={"name": "mnist", "root": str(raw), **split, "valid_source": "official", "source": "torchvision.datasets.MNIST layout"})
