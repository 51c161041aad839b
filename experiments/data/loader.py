"""Batches sliced from a whole dataset held as one uint8 tensor, cropped (augmented), converted and
normalised batch-wise on the training device.

Why not torch's DataLoader: it collates item by item in Python worker processes; once the images
are one decoded tensor (in memory or memory-mapped), slicing a batch and moving it is all that is left."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .. import streams

Crop = Callable[[Tensor, torch.Generator], Tensor]  # uint8 batch on the device -> cropped (augmented) uint8 batch


@contextlib.contextmanager
def one_thread():
    """Assemble CPU batches on one intra-op thread, as torch's DataLoader workers do: the ops are small,
    and their parallel regions cost more than they save (3x slower with 2 threads on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class TensorLoader:
    """Iterable of (x, y) batches, fastai-compatible (len, n, bs, device, to, one_batch).

    `rows` (optional) restricts it to those rows of `images`: a training and a tuning loader then share one
    tensor (one memory map, one copy on the GPU) instead of each holding a copy of its part."""

    n_inp = 1

    def __init__(self, images: Tensor, labels: Tensor, bs: int, *, shuffle: bool, drop_last: bool, seed: int,
                 mean: Sequence[float], std: Sequence[float], crop: Crop | None = None,
                 device: torch.device | str = "cpu", rows: Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.bs = images, labels.long(), bs
        self.rows = None if rows is None else rows.long()
        self.shuffle, self.drop_last, self.crop = shuffle, drop_last, crop
        # their own streams (experiments.streams): the order and the crops at a seed do not depend on each other
        self.generator, self.augment_generator = streams.generator(seed, "order"), streams.generator(seed, "augment")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.to(device)

    @property
    def n(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else math.ceil(self.n / self.bs)

    def to(self, device: torch.device | str) -> "TensorLoader":
        self.device = torch.device(device)
        mean, std = self.mean.to(self.device), self.std.to(self.device)
        self.scale, self.shift = 1 / (255 * std), -mean / std  # x_uint8 * scale + shift = (x / 255 - mean) / std
        return self

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for i in range(len(self)):
            idx = order[i * self.bs:(i + 1) * self.bs]
            yield self.batch(idx)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The batch of the loader's items `idx` (positions 0..n-1, mapped to rows of `images`)."""
        if self.rows is not None:
            idx = self.rows[idx]
        if self.device.type != "cpu":
            return self._batch(idx)
        with one_thread():
            return self._batch(idx)

    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Gather, move, crop (uint8: fewer, smaller pixels to convert), then scale and normalise in one pass."""
        non_blocking = self.device.type == "cuda"
        y = self.labels[idx].to(self.device, non_blocking=non_blocking)
        x = self.images[idx].to(self.device, non_blocking=non_blocking)
        if self.crop is not None:
            x = self.crop(x, self.augment_generator)
        return torch.addcmul(self.shift, x, self.scale, out=torch.empty(x.shape, device=self.device)), y

    def random_states(self) -> list[Tensor]:
        """The generators' states (a checkpoint saves them: a resumed run continues the same order and crops)."""
        return [self.generator.get_state(), self.augment_generator.get_state()]

    def set_random_states(self, states: list[Tensor]) -> None:
        self.generator.set_state(states[0])
        self.augment_generator.set_state(states[1])

    def order_digest(self) -> str:
        """Digest of the order of the next epoch's items (before training: the first epoch's), drawn from a copy of
        the order generator (the record's pairing.data_order)."""
        g = torch.Generator()
        g.set_state(self.generator.get_state())
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        return streams.tensor_digest(self.rows[order] if self.rows is not None else order)

    def one_batch(self) -> tuple[Tensor, Tensor]:
        return self.batch(torch.arange(min(self.bs, self.n)))
