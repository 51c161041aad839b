"""`data=synthetic`: generated images whose brightness encodes the class, for smoke tests and benchmarks.

Learnable on purpose: a smoke test can then see the loss fall, not just run."""
from __future__ import annotations

import torch

from . import DataBundle, Part, dataset, holdout, split_loaders


def make_images(n: int, channels: int, size: int, num_classes: int, gen: torch.Generator) -> Part:
    labels = torch.randint(num_classes, (n,), generator=gen)
    noise = torch.randint(0, 128, (n, channels, size, size), generator=gen)
    level = (labels * 127 // max(num_classes - 1, 1)).view(-1, 1, 1, 1)
    return Part((noise + level).to(torch.uint8), labels)


@dataset("synthetic")
def synthetic(cfg, bs: int, seed: int, device: torch.device) -> DataBundle:
    size, channels = cfg["image_size"], cfg["in_channels"]
    gen = torch.Generator().manual_seed(cfg["data_seed"])
    train_set = make_images(cfg["n_train"], channels, size, cfg["num_classes"], gen)
    # drawn after the training set from the same generator: the training images never depend on whether it is
    fit_on, valid_on, split = holdout(cfg, seed, train_set, lambda: make_images(cfg["n_valid"], channels, size, cfg["num_classes"], gen))
    half = (0.5,) * channels
    train, valid = split_loaders(fit_on, valid_on, bs=bs, seed=seed, device=device, mean=half, std=half)
    return DataBundle(train, valid, in_channels=channels, num_classes=cfg["num_classes"], image_size=size,
                      info={"name": "synthetic", **split, "valid_source": "generated"})
