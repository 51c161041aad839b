"""Real-dataset loading (Imagenette layout, MNIST idx files), the decoded cache and the batched crops,
all on data generated here (tests never touch the network or ../shared/data)."""
from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from experiments.data import DataError, build_data
from experiments.data import imagenette as imagenette_mod
from experiments.data import mnist as mnist_mod
from experiments.data.augment import CenterCrop, RandomResizedCropFlip, cache_side
from experiments.data.imagenette import IMAGENET_MEAN, IMAGENET_STD
from experiments.schema import ImagenetteConf, MnistConf

CLASSES = ["n01440764", "n02102040", "n03000684"]
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]  # one solid colour per class: pixels reveal the label
IMAGE_SIZE = 32  # cached at cache_side(32) = 40 px


def solid(label: int, w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), COLOURS[label])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Imagenette layout: 3 classes; train 3 JPEGs each (+ a PNG, a WebP, a corrupt JPEG, a text file); val 2 each."""
    root = tmp_path / "imagenette"
    for split, n in (("train", 3), ("val", 2)):
        for label, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):  # varied sizes and aspect ratios
                solid(label, 48 + 16 * i, 64 - 8 * i).save(d / f"{wnid}_{i}.JPEG", quality=95)
    solid(0, 50, 50).save(root / "train" / CLASSES[0] / "extra.png")
    solid(1, 60, 45).save(root / "train" / CLASSES[1] / "extra.webp", quality=90)
    buf = io.BytesIO()
    solid(2, 64, 64).save(buf, format="JPEG")
    (root / "train" / CLASSES[2] / "broken.JPEG").write_bytes(buf.getvalue()[:200])  # truncated JPEG
    (root / "train" / CLASSES[1] / "notes.txt").write_text("not an image")
    return root


def imagenette_cfg(root: Path, cache: Path, **over):
    # the schema's defaults (experiments.schema.ImagenetteConf), pointed at the generated folder
    return OmegaConf.merge(OmegaConf.structured(ImagenetteConf), {"root": str(root), "cache_dir": str(cache),
                           "image_size": IMAGE_SIZE, "download": False, "workers": 1, **over})


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255


def test_folder_loads_with_labels_and_skips_bad_files(folder, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    data = build_data(imagenette_cfg(folder, tmp_path / "cache", workers=2), bs=4, seed=0)  # 2 decoding processes
    assert (data.num_classes, data.in_channels, data.image_size) == (3, 3, IMAGE_SIZE)
    assert data.info["classes"] == CLASSES
    assert data.info["source_px"] == 50  # the first file of train/ (extra.png, 50 × 50), whatever data.size says
    assert (data.info["n_train"], data.info["n_valid"]) == (3 * 3 + 2, 3 * 2)  # PNG and WebP count, bad files do not
    assert sorted(data.info["skipped"]) == [f"train/{CLASSES[1]}/notes.txt", f"train/{CLASSES[2]}/broken.JPEG"]
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "notes.txt" in warnings[0] and "broken.JPEG" in warnings[0]
    # every image's colour is its label's colour, in both splits (the crop of a solid image is solid)
    for loader in (data.valid, data.train):
        for x, y in loader:
            assert x.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32 and x.is_contiguous()
            colour = unnormalise(x).mean(dim=(2, 3))
            expected = torch.tensor(COLOURS, dtype=torch.float32)[y]
            assert (colour - expected).abs().max() < 12, (colour, y)


def test_cache_is_reused_then_rebuilt_when_a_file_changes(folder, tmp_path):
    cfg = imagenette_cfg(folder, tmp_path / "cache")
    first = build_data(cfg, bs=4, seed=0).info
    assert first["cache_built"]
    train_cache = Path(first["cache"][0])
    mtime = (train_cache / "images.u8").stat().st_mtime_ns

    second = build_data(cfg, bs=4, seed=0).info
    assert not second["cache_built"] and second["cache"] == first["cache"]
    assert (train_cache / "images.u8").stat().st_mtime_ns == mtime  # not rewritten

    changed = folder / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    solid(0, 80, 80).save(changed, quality=80)  # new content (size and mtime change)
    os.utime(changed, ns=(mtime + 10**9, mtime + 10**9))  # a distinct mtime even on coarse-grained filesystems
    third = build_data(cfg, bs=4, seed=0).info
    assert third["cache_built"] and third["cache"][0] != first["cache"][0]
    assert third["cache"][1] == first["cache"][1]  # val did not change, its cache stays
    assert not train_cache.exists()  # the stale copy of the same folder is removed


def test_augmentation_shapes_dtypes_and_determinism(folder, tmp_path):
    crop = RandomResizedCropFlip(24, min_scale=0.35)
    x = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    a = crop(x, torch.Generator().manual_seed(1))
    b = crop(x, torch.Generator().manual_seed(1))
    c = crop(x, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 24, 24) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    p = crop.params(1000, torch.Generator().manual_seed(0))
    area = p[:, 0] * p[:, 1]
    assert (p[:, :2] <= 1).all() and (area >= 0.35 - 1e-6).all()  # crops inside the image, at least min_scale of it
    assert (p[:, 2] + p[:, 0] <= 1 + 1e-6).all() and (p[:, 3] + p[:, 1] <= 1 + 1e-6).all()
    assert 0.4 < p[:, 4].mean() < 0.6  # flip half the time

    # whole-image crop + certain flip: both device paths give the mirrored image
    mirror = RandomResizedCropFlip(40, min_scale=1.0, ratio=(1.0, 1.0), flip_p=1.0)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(mirror(x, gen), x.flip(-1))
    resampled = mirror._resample(x, mirror.params(len(x), gen))  # the GPU path, run on the CPU
    assert resampled.dtype == torch.float32 and torch.allclose(resampled, x.flip(-1).float(), atol=1e-3)

    # on a smooth image, the CPU path (integer boxes, uint8 antialiased resize) and the GPU path (batched
    # bilinear resampling) give the same crops up to interpolation rounding
    yy, xx = torch.meshgrid(torch.arange(152.0), torch.arange(152.0), indexing="ij")
    smooth = torch.stack([127 + 100 * torch.sin(xx / 20), 127 + 100 * torch.cos(yy / 25), (xx + yy) / 2]).round()
    smooth = smooth.to(torch.uint8).expand(16, 3, 152, 152).contiguous(memory_format=torch.channels_last)
    rrc = RandomResizedCropFlip(128)
    p = rrc.params(16, torch.Generator().manual_seed(0))
    diff = (rrc._per_image(smooth, p).float() - rrc._resample(smooth, p)).abs()
    assert diff.mean() < 3 and diff.max() < 12

    centre = CenterCrop(24)(x)
    assert torch.equal(centre, x[..., 8:32, 8:32])
    assert cache_side(128) == 152 and cache_side(IMAGE_SIZE) == 40

    # the loader's batches are fixed by the run seed
    cfg = imagenette_cfg(folder, tmp_path / "cache")
    first = [next(iter(build_data(cfg, bs=4, seed=s).train)) for s in (3, 3, 4)]
    assert torch.equal(first[0][0], first[1][0]) and torch.equal(first[0][1], first[1][1])
    assert not torch.equal(first[0][0], first[2][0])


def test_missing_and_offline_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(imagenette_mod, "download", offline)
    (tmp_path / "nowhere").mkdir()  # an existing, empty data.root: the download is tried there (a missing one is refused)
    with pytest.raises(DataError) as err:
        build_data(imagenette_cfg(tmp_path / "nowhere", tmp_path / "cache", download=True, size=320), bs=4, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")
    assert str(tmp_path / "nowhere") in msg and "imagenette2-320.tgz" in msg and "data.root=" in msg
    assert "download failed" in msg

    monkeypatch.setattr(mnist_mod, "download", offline)
    with pytest.raises(DataError) as err:
        build_data({"name": "mnist", "root": str(tmp_path / "nowhere"), "download": True}, bs=4, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "nowhere" / "MNIST" / "raw") in msg and "data.root=" in msg


def test_bad_folders_are_refused(folder, tmp_path):
    (folder / "train" / "n09999999").mkdir()
    with pytest.raises(DataError, match="is empty"):
        build_data(imagenette_cfg(folder, tmp_path / "cache"), bs=4, seed=0)
    (folder / "train" / "n09999999").rmdir()
    (folder / "val" / CLASSES[0]).rename(folder / "val" / "n00000000")
    with pytest.raises(DataError, match="different class folders"):
        build_data(imagenette_cfg(folder, tmp_path / "cache"), bs=4, seed=0)
    with pytest.raises(DataError, match="data.size=200"):
        build_data(imagenette_cfg(folder, tmp_path / "cache", size=200), bs=4, seed=0)


def two_class_folder(root: Path, side: int) -> Path:
    """train/ and val/ with one solid-colour JPEG in each of two classes."""
    for split in ("train", "val"):
        for label, wnid in enumerate(CLASSES[:2]):
            (root / split / wnid).mkdir(parents=True)
            solid(label, side, side).save(root / split / wnid / "a.JPEG")
    return root


def test_a_class_with_no_readable_image_is_refused(tmp_path):
    root = two_class_folder(tmp_path / "bad", 40)
    (root / "train" / CLASSES[1] / "a.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="no readable image"):
        build_data(imagenette_cfg(root, tmp_path / "cache"), bs=2, seed=0)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))  # the failed build left nothing half-written


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format MNIST ships in: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n in (("train", 40), ("t10k", 12)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        sets[prefix] = images, labels
    cfg = OmegaConf.merge(OmegaConf.structured(MnistConf), {"root": str(tmp_path), "download": False})
    data = build_data(cfg, bs=8, seed=0)
    assert (data.in_channels, data.num_classes, data.image_size) == (1, 10, 28)
    assert (data.info["n_train"], data.info["n_valid"]) == (40, 12)
    x, y = next(iter(data.valid))  # ordered: the first 12 test digits, pixels intact
    images, labels = sets["t10k"]
    assert torch.equal(y, torch.from_numpy(labels[:len(y)]).long())
    pixels = (x * 0.3081 + 0.1307) * 255
    assert torch.allclose(pixels[:, 0], torch.from_numpy(images[:len(y)]).float(), atol=1e-3)

    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")  # truncated
    with pytest.raises(DataError, match="not a valid idx file"):
        build_data(cfg, bs=8, seed=0)
