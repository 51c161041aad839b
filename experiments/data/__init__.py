"""Datasets: each builder turns its `data` config into a DataBundle (loaders + what the model needs to know).

The dataset decides in_channels, num_classes and the image size handed to the stem (docs/DESIGN.md, One run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from fastai.data.core import DataLoaders
from omegaconf import OmegaConf
from sklearn.model_selection import train_test_split

from stems.base import StemlabError, first_line

from ..schema import DATASETS
from ..streams import stream_seed
from .loader import TensorLoader


class DataError(StemlabError):
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
    """Build the dataset named by `cfg.name`; keys `cfg` lacks take their schema's defaults (experiments.schema)."""
    if cfg["name"] not in BUILDERS:
        raise DataError(f"unknown dataset {cfg['name']!r}; choose one of: {', '.join(sorted(BUILDERS))}.")
    schema = next(d for d in DATASETS if d.name == cfg["name"])
    return BUILDERS[cfg["name"]](OmegaConf.merge(OmegaConf.structured(schema), cfg), bs, seed, torch.device(device))


def not_created(cfg: Mapping[str, Any]) -> str | None:
    """Why not to download into `data.root`: a folder given there that does not exist (a mistyped path must not make
    a folder; the default folder is created)."""
    root = cfg.get("root")
    if root and not Path(root).expanduser().is_dir():
        return f"data.root={root} does not exist (it is not created for a download)"
    return None


@dataclass
class Part:
    """The rows of one image tensor a loader serves (`rows` None: all of them)."""
    images: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)


@dataclass(frozen=True)
class TuneSplit:
    on: bool
    pct: float
    seed: int


def split_seed(cfg: Mapping[str, Any], seed: int) -> int:
    """The random state of the dataset's splits (a valid split carved from the training data, the tuning split):
    `data.split_seed` for every run, or with `data.split_by_seed` one per run seed (its `split` stream, shifted by
    data.split_seed), shared by every stem at that seed. The one place reading both keys."""
    if cfg["split_by_seed"]:
        return (stream_seed(seed, "split") + int(cfg["split_seed"])) % 2 ** 32  # sklearn takes 32-bit states
    return int(cfg["split_seed"])


def split_info(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How the run's carved splits were drawn, for the record's `data` (the report says it with `valid_source`: a
    dataset's own validation set or one carved from its training data)."""
    return {"split": "per seed" if cfg["split_by_seed"] else "fixed", "split_seed": int(cfg["split_seed"])}


def tune_settings(cfg: Mapping[str, Any], seed: int) -> TuneSplit:
    """The one place reading `data.tune_split` and `data.tune_pct` (every data schema has them)."""
    return TuneSplit(bool(cfg["tune_split"]), float(cfg["tune_pct"]), split_seed(cfg, seed))


def tune_split(labels: np.ndarray, pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train rows, tune rows): a stratified `pct` of `labels` held out, fixed by `seed` alone."""
    labels = np.asarray(labels)
    if not 0 < pct < 1:
        raise DataError(f"data.tune_pct={pct} is not a fraction; use a value between 0 and 1 (0.1 is usual).")
    classes = len(np.unique(labels))
    try:
        train, tune = train_test_split(np.arange(len(labels)), test_size=pct, stratify=labels, random_state=seed)
    except ValueError as e:  # sklearn: fewer held-out rows than classes, or a class with a single image
        raise DataError(f"data.tune_pct={pct} cannot hold out a stratified tuning split from {len(labels)} training "
                        f"images of {classes} classes ({first_line(e)}); raise data.tune_pct or turn "
                        f"data.tune_split off.") from e
    return np.sort(train), np.sort(tune)


def holdout(cfg: Mapping[str, Any], seed: int, train: Part, load_valid: Callable[[], Part]) -> tuple[Part, Part, dict[str, Any]]:
    """(what the run trains on, what it validates on, their description for `info`).

    With `data.tune_split`, a fixed stratified `data.tune_pct` of the training set is validated on instead of
    the validation set, which is then never loaded (the fair protocol's tuning stage: issue 12 §1)."""
    tune = tune_settings(cfg, seed)
    if not tune.on:
        valid = load_valid()
        return train, valid, {"valid_split": "valid", "n_train": len(train), "n_valid": len(valid), **split_info(cfg)}
    train_rows, tune_rows = tune_split(train.labels.numpy(), tune.pct, tune.seed)
    info = {"valid_split": "tune", "n_train": len(train_rows), "n_valid": len(tune_rows), "tune_pct": tune.pct,
            "tune_seed": tune.seed, **split_info(cfg)}
    return (Part(train.images, train.labels, torch.from_numpy(train_rows)),
            Part(train.images, train.labels, torch.from_numpy(tune_rows)), info)


def split_loaders(train: Part, valid: Part, *, bs: int, seed: int, device, mean, std):
    """The usual pair for uncropped data: a shuffled, drop-last train loader and an ordered valid loader (2x batch)."""
    common = dict(seed=seed, mean=mean, std=std, device=device)
    return (TensorLoader(train.images, train.labels, bs, rows=train.rows, shuffle=True, drop_last=len(train) >= bs, **common),
            TensorLoader(valid.images, valid.labels, 2 * bs, rows=valid.rows, shuffle=False, drop_last=False, **common))


from . import mnist5k, synthetic  # noqa: E402,F401  (importing a dataset module registers its builder)
from . import imagenette, mnist  # noqa: E402,F401
