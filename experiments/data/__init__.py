"""Datasets: each builder turns its `data` config into a DataBundle (loaders + what the model needs to know).

The dataset decides in_channels, num_classes and the image size handed to the stem (DESIGN.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from fastai.data.core import DataLoaders

from .loader import TensorLoader


class DataError(ValueError):
    """A dataset request that cannot be honoured; the message is one sentence naming the fix."""


@dataclass
class DataBundle:
    train: TensorLoader
    valid: TensorLoader
    in_channels: int
    num_classes: int
    image_size: int
    info: dict[str, Any] = field(default_factory=dict)  # name, sizes, skipped files... (goes to the result record)

    def dataloaders(self) -> DataLoaders:
        return DataLoaders(self.train, self.valid, device=self.train.device)


Builder = Callable[[Mapping[str, Any], int, int, torch.device], DataBundle]  # (cfg, bs, seed, device)
BUILDERS: dict[str, Builder] = {}


def dataset(name: str):
    """Decorator registering a DataBundle builder under the `data.name` it serves."""
    def decorate(fn: Builder) -> Builder:
        BUILDERS[name] = fn
        return fn
    return decorate


def build_data(cfg: Mapping[str, Any], *, bs: int, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """Build the dataset named by `cfg.name`."""
    if cfg["name"] not in BUILDERS:
        raise DataError(f"unknown dataset {cfg['name']!r}; choose one of: {', '.join(sorted(BUILDERS))}.")
    return BUILDERS[cfg["name"]](cfg, bs, seed, torch.device(device))


def split_loaders(x_train, y_train, x_valid, y_valid, *, bs: int, seed: int, device, mean, std):
    """The usual pair for uncropped data: a shuffled, drop-last train loader and an ordered valid loader (2x batch)."""
    train = TensorLoader(x_train, y_train, bs, shuffle=True, drop_last=len(x_train) >= bs, seed=seed,
                         mean=mean, std=std, device=device)
    valid = TensorLoader(x_valid, y_valid, 2 * bs, shuffle=False, drop_last=False, seed=seed,
                         mean=mean, std=std, device=device)
    return train, valid


from . import mnist5k, synthetic  # noqa: E402,F401  (importing a dataset module registers its builder)
from . import imagenette, mnist  # noqa: E402,F401
