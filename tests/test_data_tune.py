"""The tuning split (issue 12 §1): a fixed, stratified part of the training set validated on instead of the
validation set, the same for every stem and run seed of a study."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.data import DataError, build_data, tune_split

from experiments.schema import Mnist5kConf
from tests.test_data import CLASSES, imagenette_cfg, solid, write_idx


def test_tune_split_is_stratified_disjoint_and_fixed_by_its_seed():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 30)[np.random.default_rng(0).permutation(60)]
    train, tune = tune_split(labels, 0.1, seed=0)
    # 10 % of each class: 1 of 10, 2 of 20, 3 of 30
    assert Counter(labels[tune].tolist()) == {0: 1, 1: 2, 2: 3}
    assert Counter(labels[train].tolist()) == {0: 9, 1: 18, 2: 27}
    assert sorted([*train, *tune]) == list(range(60)) and list(train) == sorted(train) and list(tune) == sorted(tune)

    # 25 % of 7 + 13 = ceil(5) held out; 7 * 5/20 = 1.75 and 13 * 5/20 = 3.25 -> floors 1 and 3, the fifth to the
    # largest remainder (class 0): 2 and 3
    uneven = np.array([0] * 7 + [1] * 13)
    train, tune = tune_split(uneven, 0.25, seed=0)
    assert Counter(uneven[tune].tolist()) == {0: 2, 1: 3} and len(train) == 15

    assert all(np.array_equal(a, b) for a, b in zip(tune_split(labels, 0.1, 0), tune_split(labels, 0.1, 0)))
    assert not np.array_equal(tune_split(labels, 0.1, 0)[1], tune_split(labels, 0.1, 1)[1])


@pytest.mark.parametrize("pct", [0.0, 1.0, 1.5])
def test_tune_pct_must_be_a_fraction(pct):
    with pytest.raises(DataError, match=f"data.tune_pct={pct} is not a fraction"):
        tune_split(np.array([0, 1] * 10), pct, seed=0)


def test_a_tuning_split_too_small_for_its_classes_is_one_sentence():
    with pytest.raises(DataError) as err:
        tune_split(np.array([0, 1, 2] * 10), 0.05, seed=0)  # ceil(0.05 * 30) = 2 held out, for 3 classes
    msg = str(err.value)
    assert msg.startswith("data.tune_pct=0.05 cannot hold out a stratified tuning split from 30 training images of 3 classes")
    assert msg.endswith("raise data.tune_pct or turn data.tune_split off.")


# --- every dataset builder ------------------------------------------------------------------------------------------

@pytest.fixture
def configs(tmp_path: Path) -> dict:
    """One small config per dataset, with the data each needs generated under tmp_path."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 12)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 3)
    folder = tmp_path / "imagenette"
    for split, n in (("train", 10), ("val", 2)):
        for label, wnid in enumerate(CLASSES):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(n):
                solid(label, 24 + i, 24).save(folder / split / wnid / f"{i}.JPEG")
    return {
        "synthetic": {"name": "synthetic", "n_train": 40, "n_valid": 8, "image_size": 8, "in_channels": 1,
                      "num_classes": 4, "data_seed": 0},
        "mnist5k": OmegaConf.to_container(OmegaConf.structured(Mnist5kConf)),
        "mnist": {"name": "mnist", "root": str(tmp_path), "download": False},
        "imagenette": OmegaConf.to_container(imagenette_cfg(folder, tmp_path / "cache")),
    }


NORMALISE = {"synthetic": (0.5, 0.5), "mnist5k": (0.1307, 0.3081), "mnist": (0.1307, 0.3081)}  # (mean, std)
TRAIN_SET = {"synthetic": 40, "mnist5k": 4000, "mnist": 60, "imagenette": 30}  # training-set sizes of `configs`


@pytest.mark.parametrize("name", list(TRAIN_SET))
def test_every_dataset_validates_on_a_fixed_tuning_split_when_asked(configs, name):
    cfg = configs[name]
    plain = build_data(cfg, bs=4, seed=0)
    assert plain.info["valid_split"] == "valid" and plain.train.rows is None and plain.valid.rows is None
    assert plain.info["n_train"] == TRAIN_SET[name]

    tuned = [build_data({**cfg, "tune_split": True, "tune_pct": 0.1}, bs=4, seed=s) for s in (0, 0, 7)]
    info, train, tune = tuned[0].info, tuned[0].train, tuned[0].valid
    held_out = -(-TRAIN_SET[name] // 10)  # ceil(10 %)
    assert info["valid_split"] == "tune" and (info["n_train"], info["n_valid"]) == (TRAIN_SET[name] - held_out, held_out)
    assert train.images is tune.images  # both parts of the one training tensor
    assert sorted(torch.cat([train.rows, tune.rows]).tolist()) == list(range(TRAIN_SET[name]))  # disjoint, complete
    for other in tuned[1:]:  # the same rows for every run seed (fixed by the dataset's split seed only)
        assert torch.equal(other.valid.rows, tune.rows) and torch.equal(other.train.rows, train.rows)

    x, y = next(iter(tune))  # the tuning loader serves its rows of the training images, in order
    rows = tune.rows[:len(y)]
    assert torch.equal(y, train.labels[rows])
    if name in NORMALISE:  # (imagenette's loader center-crops: its pixels are checked in test_data.py)
        mean, std = NORMALISE[name]
        assert torch.allclose(x, (train.images[rows].float() / 255 - mean) / std, atol=1e-5)

    moved = build_data({**cfg, "tune_split": True, "tune_pct": 0.1, "split_seed": 5}, bs=4, seed=0)
    assert not torch.equal(moved.valid.rows, tune.rows)  # another split seed, another tuning split


def test_the_validation_set_is_not_read_when_tuning(configs, tmp_path):
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")  # broken test labels
    with pytest.raises(DataError, match="not a valid idx file"):
        build_data(configs["mnist"], bs=4, seed=0)
    assert build_data({**configs["mnist"], "tune_split": True}, bs=4, seed=0).info["valid_split"] == "tune"

    tuned = build_data({**configs["imagenette"], "tune_split": True}, bs=4, seed=0).info
    assert len(tuned["cache"]) == 1 and "-train-" in tuned["cache"][0]  # no val cache was built
