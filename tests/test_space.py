"""The stem design space: registered stems as its points (the same network), refused points, the seeded sampler,
the cost band, the design labels, and the space sweeper end to end on a tiny synthetic sweep."""
from __future__ import annotations

import argparse
import json
import random

import pytest
import torch

import stems
from analyze.report.space import run_space
from experiments.config import ConfigError, check_command_line
from profiler.stem_cost import cost
from hydra_plugins.stemlab_space_sweeper._sampling import Choices, sample, sample_points
from stems.space import point_of
from stems.space_labels import code, design

from tests.conftest import TINY, run_cli


def leaves(module: torch.nn.Module) -> list[str]:
    return [repr(m) for m in module.modules() if not list(m.children())]


def same_network(a: torch.nn.Module, b: torch.nn.Module, in_channels: int = 3) -> bool:
    """Same layers in the same order, and the same output once b holds a's weights (training mode: BN batch stats)."""
    if leaves(a) != leaves(b):
        return False
    with torch.no_grad():
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            pb.copy_(pa)
    x = torch.randn(2, in_channels, 32, 32)
    return torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", stems.available())
def test_every_registered_stem_is_a_point_or_says_why_not(name):
    if stems.spec(name).outside:
        with pytest.raises(stems.StemError, match=rf"^stem '{name}' is not a point of the stem space: .+\.$"):
            point_of(name)
        return
    torch.manual_seed(0)
    assert same_network(stems.build(name, 3), stems.build("space", 3, **point_of(name)))


@pytest.mark.parametrize("name, params", [("xresnet_3conv", {"widths": [24, 48, 64], "act": "silu"}),
                                          ("resnet_7x7", {"kernel_size": 5, "norm": "ln"}),
                                          ("space_to_depth", {"kernel_size": 1})])
def test_stems_with_changed_parameters_map_too(name, params):
    assert same_network(stems.build(name, 1, **params), stems.build("space", 1, **point_of(name, params)), in_channels=1)


def test_stems_outside_the_space_by_their_parameters_are_named():
    with pytest.raises(stems.StemError, match="^stem 'patchify_2x2_s2' is not a point of the stem space: these parameters"):
        point_of("patchify_2x2_s2", {"pool": "avg"})


@pytest.mark.parametrize("params, rule", [
    ({"strides": [2, 2, 2]}, "downsample by 16, but the stem contract needs 4"),
    ({"kernels": [4, 3, 3]}, "needs kernel = stride, got kernel 4 at stride 2"),
    ({"strides": [4, 1, 1], "pool": "none", "kernels": [3, 3, 3]}, "a kernel 3 at stride 4 skips input pixels"),
    ({"widths": [8] * 4 + [64], "kernels": [3] * 5, "strides": [2] + [1] * 4}, "1 to 4 conv layers, not 5"),
    ({"pool": "none", "pool_at": 1, "strides": [2, 2, 1]}, "pool_at=1 needs pool=max"),
    ({"s2d": 3}, "s2d and strides must be 1, 2 or 4"),
    ({"kernels": [3, 3]}, "kernels must have 3 entries"),
])
def test_invalid_points_are_refused_in_one_sentence_before_anything_runs(params, rule):
    with pytest.raises(stems.StemError, match=rf"^stem 'space' cannot be built with .*{rule}.*\.$"):
        stems.build("space", 3, **params)
    overrides = ["stem=space", *(f"stem.{k}={str(v).replace(' ', '')}" for k, v in params.items()), *TINY]
    with pytest.raises(ConfigError, match=rf"^stem 'space' cannot be built with .*{rule}"):
        check_command_line(overrides)


def test_the_cost_of_a_point_is_its_convolutions_by_hand():
    # k7s2x64 on 3x32x32 (16x16 out): 2 * 3*64*7*7 * 16*16; then k3x32 on 64x8x8 after the pool: 2 * 64*32*9 * 8*8
    p = dict(widths=[64, 32], kernels=[7, 3], strides=[2, 1], pool="max", pool_at=1, out_channels=32)
    assert cost("space", 3, 32, 32, {k: v for k, v in p.items() if k != "out_channels"})["flops"] == \
        2 * 3 * 64 * 49 * 256 + 2 * 64 * 32 * 9 * 64


def test_the_sampler_is_deterministic_and_draws_valid_distinct_points():
    a, b = sample_points(12, 3, Choices(), 1, 28), sample_points(12, 3, Choices(), 1, 28)
    assert a == b and a != sample_points(12, 4, Choices(), 1, 28)
    assert len({repr(sorted(p.items())) for p in a}) == 12
    for p in a:
        stems.build("space", 1, image_size=28, **p)  # contract-checked


def test_the_sampler_keeps_to_its_choices():
    choices = Choices(depths=(2,), widths=(16,), kernels=(5,), patchify=False, mechanisms=("conv",), norms=("ln",),
                      acts=("gelu",))
    for p in (sample(random.Random(s), choices) for s in range(20)):
        assert len(p["widths"]) == 2 and p["widths"][0] == 16 and p["kernels"] == [5, 5] and p["pool"] == "none"
        assert sorted(p["strides"]) in ([1, 4], [2, 2]) and p["s2d"] == 1 and (p["norm"], p["act"]) == ("ln", "gelu")


def test_a_cost_band_holds_and_an_impossible_one_is_one_sentence():
    target = cost("resnet_7x7", 3, 32)["flops"]
    band = (0.9 * target, 1.1 * target)
    for p in sample_points(4, 0, Choices(), 3, 32, band):
        assert band[0] <= cost("space", 3, 32, params=p)["flops"] <= band[1]
    with pytest.raises(stems.StemError, match=r"^only 0 of 2 distinct stems within .* MFLOPs in 50 draws; widen"):
        sample_points(2, 0, Choices(), 3, 32, (1.0, 2.0), max_draws=50)


def test_design_labels_of_a_known_point():
    assert design(point_of("xresnet_3conv")) == {
        "depth": "3", "downsampling": "conv+max", "first conv stride": "2", "largest kernel": "3",
        "patch embedding": "no", "widest inner layer": "32", "norm": "bn", "act": "relu"}
    assert design(point_of("space_to_depth"))["downsampling"] == "s2d+s2d"
    assert design(point_of("patchify_4x4"))["downsampling"] == "conv+conv"


@pytest.mark.slow
def test_space_sweep_runs_the_drawn_stems_and_refuses_a_stem_choice(tmp_path):
    sweep = tmp_path / "space"
    args = ["-m", "hydra/sweeper=space", "hydra.sweeper.samples=2", "hydra.sweeper.sample_seed=5", *TINY, "seed=0",
            f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((sweep / "space.json").read_text())
    assert plan["image_size"] == 16 and plan["points"] == [
        {"index": i, "dir": f"sample{i:03d}", "code": code(p), "flops": cost("space", 3, 16, params=p)["flops"],
         "params": p} for i, p in enumerate(sample_points(2, 5, Choices(), 3, 16))]
    for point in plan["points"]:
        (record,) = (sweep / point["dir"]).glob("*/result.json")
        stem = json.loads(record.read_text())["config"]["stem"]
        assert json.loads(record.read_text())["status"] == "completed"
        assert {k: stem[k] for k in point["params"]} == point["params"] and "seed=0" in record.parent.name

    out = tmp_path / "analysis"
    assert run_space(argparse.Namespace(dir=str(sweep), out=str(out), export=1)) == 0
    assert "**2 completed runs** of 2 distinct stems" in (out / "space.md").read_text()
    assert {p.name for p in out.iterdir()} == {"space.md", "stems.yaml", "space_edf.png", "space_by_choice.png",
                                               "space_cost.png"}

    refused = run_cli("-m", "hydra/sweeper=space", "stem=resnet_7x7", *TINY, f"hydra.sweep.dir={tmp_path / 'no'}")
    assert refused.returncode == 2 and "hydra/sweeper=space samples the stem itself" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_the_study_preset_composes():
    assert check_command_line(["+experiment=stem_space_mnist5k", "logger=none"], multirun=True) == 1
