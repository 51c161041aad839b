"""The stem registry's surface and its contract check (every stem's own contract is in test_stems.py)."""
import pytest
import torch
from hydra.core.config_store import ConfigStore
from torch import nn

import stems
from experiments.config import register_configs, stem_node


def test_available_is_sorted_and_has_the_foundation_stems():
    names = stems.available()
    assert names == sorted(names)
    assert {"resnet_7x7", "xresnet_3conv", "patchify_4x4"} <= set(names)


def test_spec_records_source_family_and_defaults():
    s = stems.spec("xresnet_3conv")
    assert s.family == "conv_stack" and "Bag of Tricks" in s.source and "stem_type='deep'" in s.source
    assert s.defaults["widths"] == [32, 32, 64] and (s.stride, s.out_channels) == (4, 64)


def test_an_alias_resolves_to_its_stem_and_is_listed_once():
    assert stems.aliases() == {"deep": "xresnet_3conv"}
    assert "deep" not in stems.available() and "xresnet_3conv" in stems.available()
    assert stems.spec("deep") is stems.spec("xresnet_3conv")
    assert stems.build("deep", 3)(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_a_name_or_alias_cannot_be_registered_twice():
    def factory(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 4, 4)

    for name, aliases in [("deep", ()), ("_test_new", ("xresnet_3conv",)), ("_test_new", ("deep",))]:
        with pytest.raises(ValueError, match="registered twice"):
            stems.register(name, family="test", source="this test", outside="a test stem", aliases=aliases)(factory)
    assert "_test_new" not in stems.available() and stems.aliases() == {"deep": "xresnet_3conv"}


@pytest.mark.parametrize("in_channels", [1, 3])
def test_build_meets_the_contract(in_channels):
    stem = stems.build("xresnet_3conv", in_channels)
    assert stem(torch.zeros(2, in_channels, 48, 40)).shape == (2, 64, 12, 10)


def test_unknown_stem_lists_the_valid_ones():
    with pytest.raises(stems.StemError, match=r"unknown stem 'nope'; choose one of: .*xresnet_3conv"):
        stems.build("nope", 3)


def test_unknown_parameter_is_named_with_the_valid_ones():
    with pytest.raises(stems.StemError, match=r"no parameter widht; its parameters are: widths, norm, act"):
        stems.build("xresnet_3conv", 3, widht=[1])


def test_out_channels_replaces_the_default_last_width():
    convs = [m for m in stems.build("xresnet_3conv", 3, 96, widths=[24, 40, 64]).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 24), (24, 40), (40, 96)]
    convs = [m for m in stems.build("xresnet_3conv", 3, 48, widths=[24, 40, 48]).modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == 48


@pytest.mark.parametrize("out", [None, 96])
def test_a_last_width_contradicting_out_channels_is_refused(out):
    # 48 is neither out_channels nor the default output width 64: the user meant it, so it is not replaced silently
    with pytest.raises(stems.StemError, match=rf"stem .xresnet_3conv. cannot be built with .*: the widths end in 48, but .* out_channels={out or 64}; "
                                              rf"set stem.out_channels=48 or end the widths in {out or 64}\.$"):
        stems.build("xresnet_3conv", 3, out, widths=[24, 32, 48])


def test_a_stem_must_declare_its_place_in_the_design_space():
    def factory(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 4, 4)

    for place in ({}, {"point": dict, "outside": "both"}):
        with pytest.raises(TypeError, match=r"^stem '_test_nowhere' must declare its place in the design space: "):
            stems.register("_test_nowhere", family="test", source="this test", **place)(factory)
    assert "_test_nowhere" not in stems.available()


def test_a_stem_that_ignores_out_channels_is_refused():
    @stems.register("_test_fixed_width", family="test", source="this test", outside="a test stem")
    def fixed(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, 64, 4, 4)

    try:
        stems.build("_test_fixed_width", 3)
        with pytest.raises(stems.StemError, match=r"gives \(2, 64, 8, 8\), not \(2, 96, 8, 8\); its factory must end in out_channels=96"):
            stems.build("_test_fixed_width", 3, 96)
    finally:
        stems.registry._REGISTRY.pop("_test_fixed_width")


def test_a_stem_with_the_wrong_stride_is_refused():
    @stems.register("_test_stride2", family="test", source="this test", outside="a test stem")
    def stride2(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 3, 2, 1)

    try:
        with pytest.raises(stems.StemError, match=r"strides must multiply to 4"):
            stems.build("_test_stride2", 3)
        with pytest.raises(ValueError, match="registered twice"):
            stems.register("_test_stride2", family="test", source="x", outside="a test stem")(stride2)
    finally:
        stems.registry._REGISTRY.pop("_test_stride2")


def test_every_registered_stem_is_a_hydra_option_with_its_parameters():
    register_configs()
    listed = {n.removesuffix(".yaml") for n in ConfigStore.instance().list("stem")}
    assert set(stems.available()) <= listed
    assert stem_node("xresnet_3conv") == {"name": "xresnet_3conv", "out_channels": 64, "match": None,
                                          "widths": [32, 32, 64], "norm": "bn", "act": "relu"}
