"""Model assembly: stem + fixed trunk + head, checked against fastai's own xresnets."""
import pytest
import torch
from fastai.vision.models.xresnet import xresnet18, xresnet50

from experiments.model import TrunkError, build_model

TRUNKS = {"xresnet18": {"layers": [2, 2, 2, 2], "widths": [64, 128, 256, 512], "expansion": 1},
          "xresnet50": {"layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512], "expansion": 4}}
XRESNET_STEM = {"name": "xresnet_3conv", "out_channels": 64, "widths": [32, 32, 64]}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("trunk,reference", [("xresnet18", xresnet18), ("xresnet50", xresnet50)])
def test_xresnet_stem_on_the_trunk_is_fastais_xresnet(trunk, reference):
    # fastai builds its xresnet independently (its own stem code); same architecture -> same parameter count
    ours = build_model(XRESNET_STEM, TRUNKS[trunk], 3, 1000)
    assert n_params(ours) == n_params(reference()) == {"xresnet18": 11_708_744, "xresnet50": 25_576_264}[trunk]


def test_top_level_children_are_named_for_grouping():
    model = build_model(XRESNET_STEM, TRUNKS["xresnet18"], 1, 10)
    assert [n for n, _ in model.named_children()] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_stage_resolutions_follow_the_stem():
    model = build_model({"name": "patchify_4x4"}, TRUNKS["xresnet50"], 3, 5)
    x, shapes = torch.zeros(2, 3, 64, 64), []
    for child in model.children():
        x = child(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 16, 16), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2), (5,)]


def test_bottleneck_trunk_needs_stem_width_divisible_by_expansion():
    with pytest.raises(TrunkError, match="divisible by 4"):
        build_model({"name": "patchify_4x4", "out_channels": 30}, TRUNKS["xresnet50"], 3, 5)
