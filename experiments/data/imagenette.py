"""`data=imagenette`: fast.ai's 10-class ImageNet subset, decoded once into a uint8 cache, cropped on the device.

Where the images come from, first match wins: `data.root` itself when it holds train/ and val/ (any copy
in Imagenette's layout, in any format Pillow reads); `<data.root>/imagenette2-<size>` (where the download
goes, so it is reused); fastai's `~/.fastai/data/imagenette2-<size>` (from `untar_data`); else a download
with torchvision's `datasets.Imagenette` into data.root, when `data.download` allows it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from stems.base import error_line

from . import DataBundle, DataError, Part, dataset, holdout, not_created
from .augment import CenterCrop, RandomResizedCropFlip, cache_side
from .cache import CachedSplit, cached_split, list_split, user_cache_dir
from .loader import TensorLoader

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = {"160": "160px", "320": "320px", "full": "full"}  # data.size -> torchvision's `size`
URLS = {"160": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        "320": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        "full": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz"}
MAX_NAMED = 20  # skipped files named in the warning line (all of them go into info)


def folder_name(size: str) -> str:
    return Path(URLS[size]).name.removesuffix(".tgz")


def is_split_root(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val").is_dir()


def shorter_side(files: list[Path]) -> int | None:
    """The first readable image's shorter side in px (Pillow reads only the header): what a data.root folder
    holds, whatever data.size says (it picks a download only)."""
    for path in files[:20]:
        try:
            with Image.open(path) as im:
                return min(im.size)
        except OSError:  # not an image: the cache skips and names it; try the next
            continue
    return None


def download(root: Path, size: str) -> Path:
    """torchvision's downloader (checksummed, extracted into root/imagenette2-<size>)."""
    from torchvision.datasets import Imagenette

    root.mkdir(parents=True, exist_ok=True)
    Imagenette(str(root), split="train", size=SIZES[size], download=True)
    return root / folder_name(size)


def find_root(cfg) -> Path:
    size = str(cfg.get("size", 160))
    if size not in SIZES:
        raise DataError(f"data.size={size} is not an Imagenette size; use 160, 320 or full.")
    root = Path(cfg.get("root") or user_cache_dir() / "data").expanduser()
    candidates = [root, root / folder_name(size), Path.home() / ".fastai" / "data" / folder_name(size)]
    for path in candidates:
        if is_split_root(path):
            return path
    why = "data.download is false" if not cfg.get("download", True) else not_created(cfg)
    if why is None:
        try:
            path = download(root, size)
            if is_split_root(path):
                return path
            why = f"the download left no train/ and val/ in {path}"
        except Exception as e:  # offline, DNS, disk full, bad checksum: all end in the same advice
            why = f"the download failed ({error_line(e, 'no message')})"
    raise DataError(f"Imagenette-{size} not found (looked for train/ and val/ in {', '.join(map(str, candidates))}) "
                    f"and {why}; download {URLS[size]}, extract it, and run with data.root=/path/to/{folder_name(size)}.")


def warn_skipped(root: Path, splits: dict[str, CachedSplit]) -> dict[str, str]:
    """One warning line naming the files that were not images (they are left out of the dataset); path -> why."""
    skipped = {f"{name}/{rel}": why for name, s in splits.items() for rel, why in s.skipped.items()}
    if skipped:
        named = ", ".join(list(skipped)[:MAX_NAMED]) + (f" and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else "")
        log.warning(f"skipped {len(skipped)} unreadable file(s) in {root}: {named}")
    return skipped


def to_device(images: torch.Tensor, device: torch.device, preload) -> torch.Tensor:
    """On a GPU, the whole uint8 cache goes to device memory once (batches are then gathered there)."""
    if preload == "auto":
        preload = device.type == "cuda" and images.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]
    return images.to(device) if preload else images


def as_part(split: CachedSplit) -> Part:
    return Part(split.images, split.labels)


@dataset("imagenette")
def imagenette(cfg, bs: int, seed: int, device: torch.device) -> DataBundle:
    image_size = int(cfg.get("image_size", 128))
    if image_size < 16:
        raise DataError(f"data.image_size={image_size} is too small for Imagenette; use 16 or more (128 is standard).")
    root = find_root(cfg)
    side = cache_side(image_size, cfg.get("val_xtra", 0.14))
    opts = dict(dataset="imagenette", side=side, cache_dir=cfg.get("cache_dir"), workers=cfg.get("workers"),
                verify=cfg["cache_verify"])
    splits = {"train": cached_split(root / "train", split="train", **opts)}

    def load_valid() -> Part:  # not called when a tuning split is validated on: val/ is then never read
        splits["val"] = cached_split(root / "val", split="val", classes=splits["train"].classes, **opts)
        return as_part(splits["val"])

    fit_on, valid_on, split = holdout(cfg, seed, as_part(splits["train"]), load_valid)
    skipped = warn_skipped(root, splits)
    preload = cfg.get("preload", "auto")
    train_images = to_device(fit_on.images, device, preload)
    valid_images = train_images if valid_on.images is fit_on.images else to_device(valid_on.images, device, preload)
    common = dict(seed=seed, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device)
    crop = RandomResizedCropFlip(image_size, min_scale=cfg.get("min_scale", 0.35), flip_p=0.5 if cfg.get("flip", True) else 0.0)
    train_dl = TensorLoader(train_images, fit_on.labels, bs, rows=fit_on.rows, shuffle=True,
                            drop_last=len(fit_on) >= bs, crop=crop, **common)
    valid_dl = TensorLoader(valid_images, valid_on.labels, 2 * bs, rows=valid_on.rows, shuffle=False,
                            drop_last=False, crop=CenterCrop(image_size), **common)
    classes = splits["train"].classes
    info = {"name": "imagenette", "root": str(root), "size": str(cfg.get("size", 160)),
            "source_px": shorter_side(list_split(root / "train")[0]), **split, "valid_source": "official", "classes": classes,
            "cache_side": side, "cache": [str(s.path) for s in splits.values()],
            "cache_built": any(s.built for s in splits.values()),
            "cache_build_s": round(sum(s.build_seconds for s in splits.values()), 2),
            "augment": repr(crop), "n_skipped": len(skipped), "skipped": skipped}
    return DataBundle(train_dl, valid_dl, in_channels=3, num_classes=len(classes), image_size=image_size, info=info)
