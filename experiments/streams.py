"""Random streams by purpose (common random numbers): every random thing a run draws comes from its own generator,
keyed by (seed, purpose), so that nothing drawn before it (the CPU format probe, `stem.match`, the profiler's inputs,
the stem's own weights) can shift it. Every stem at one seed then starts from the same trunk and head weights and
sees the same batches in the same order with the same augmentation: the stems of a study are paired by construction.

The purposes: `trunk` (trunk and head initialisation), `stem` (the stem's weights), `order` (the training data's
order, one permutation per epoch), `augment` (random crops and flips), `split` (a per-seed train/validation split,
`data.split_by_seed`).

What changes a stream, and so whether a record reproduces across commits: the purpose names and `stream_seed`
below; the modules `build_model` creates and initialises under each purpose, in their order (fastai's `init_cnn`);
the draws the loader makes from its generators (a `randperm` per epoch; the crop's `torch.rand` calls); and torch's
generator algorithm. The record's `pairing` digests (the initial trunk + head state, the first epoch's order) say
whether two runs drew the same."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

PURPOSES = ("trunk", "stem", "order", "augment", "split")


def stream_seed(seed: int, purpose: str) -> int:
    """The 63-bit seed of `purpose`'s stream at run seed `seed` (a hash: streams of other purposes or seeds are
    unrelated)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream {purpose!r}; one of {', '.join(PURPOSES)}")
    digest = hashlib.sha256(f"stemlab/{purpose}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator of `purpose`'s stream (the loader draws on the CPU whatever the training device)."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose))


@contextmanager
def drawing(seed: int, purpose: str) -> Iterator[None]:
    """torch's global CPU stream set to `purpose`'s inside, and restored after: for code that draws only from the
    global stream (layer constructors, fastai's init_cnn)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, purpose))
        yield


def state_digest(modules: Iterable[nn.Module]) -> str:
    """Hex digest of the modules' parameters and buffers (names, shapes, dtypes and values, in order)."""
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            h.update(f"{i}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(raw_bytes(tensor))
    return h.hexdigest()[:16]


def tensor_digest(t: torch.Tensor) -> str:
    """Hex digest of a tensor's values (e.g. a permutation: the data order)."""
    return hashlib.sha256(raw_bytes(t)).hexdigest()[:16]


def raw_bytes(t: torch.Tensor) -> bytes:
    """A tensor's memory as bytes, any dtype (numpy has no bf16) and any shape (a 0-d counter too)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
