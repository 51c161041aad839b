"""The profile's plots: which files are written, and which units (layers or blocks) run along the depth."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from profiler import profile_model
from profiler.plots import depth_units, save_plots
from experiments.model import build_model
from experiments.schema import TRUNKS, stem_node
from tests.test_profile import _named_model


def _is_png(path) -> bool:
    return path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"


def test_plots_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    untimed = profile_model(_named_model(), (2, 1, 28, 28), latency=False)
    assert [p.name for p in save_plots(untimed, tmp_path / "a")] == ["shares.png"]
    timed = profile_model(_named_model(), (2, 1, 28, 28), threads=1, repeats=2)
    made = save_plots(timed, tmp_path / "b")
    assert [p.name for p in made] == ["shares.png", "roofline.png"]
    assert all(_is_png(p) for p in made)
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_small_models_are_drawn_per_layer():
    p = profile_model(_named_model(), (2, 1, 28, 28), latency=False)
    units = depth_units(p.layers)
    assert units.unit.tolist() == ["stem.0", "stem.1", "stem.2", "stage1.0", "stage1.1", "stage1.2",
                                   "head.0", "head.1", "head.2"]


def test_deep_models_are_drawn_per_block():
    trunk = asdict(TRUNKS[0])  # xresnet18
    model = build_model(stem_node("xresnet_3conv"), trunk, 1, 10)
    p = profile_model(model, (2, 1, 28, 28), latency=False)
    units = depth_units(p.layers)
    # xresnet_3conv: three conv-BN-ReLU blocks and a max-pool; xresnet18: 2 ResBlocks per stage; head: pool, flatten, linear
    blocks = [f"stage{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert units.unit.tolist() == ["stem.0", "stem.1", "stem.2", "stem.3", *blocks, "head.0", "head.1", "head.2"]
    assert units.share_flops.sum() == pytest.approx(1.0)
    stage2_0 = p.layers[p.layers.name.str.startswith("stage2.0.")]
    assert units.set_index("unit").loc["stage2.0", "bytes_moved"] == stage2_0.bytes_moved.sum()
