"""The stem zoo: contract at any out_channels, hand-counted FLOPs and params, one network per name, sources'
norms, one training step, equal-cost matching, bad input, README table."""
from __future__ import annotations

import logging
from itertools import combinations
from pathlib import Path

import pytest
import torch
import torchvision
from fastai.vision.models.xresnet import xresnet18
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import stems
from stems.__main__ import END, START, main as stems_main, splice
from experiments.match import TOLERANCE, match_params
from profiler.stem_cost import cost
from stems.registry import check_contract

ROOT = Path(__file__).resolve().parents[1]
ALL = stems.available()
WITH_WIDTHS = [n for n in ALL if "widths" in stems.spec(n).defaults]

# Forward multiply-accumulates at 224 px, 3 input channels, 64 output channels, written out by hand:
# a conv costs k*k * c_in/groups * c_out * H_out*W_out. Maps: 112 = 224/2, 56 = 224/4.
P112, P56 = 112 * 112, 56 * 56
DEEP = 9 * 3 * 32 * P112 + 9 * 32 * 32 * P112 + 9 * 32 * 64 * P112  # 32-32-64 at 112 px, then max-pool
HAND_MACS = {
    "resnet_7x7": 49 * 3 * 64 * P112,  # 118.0 M: the one 7x7 s2 conv; the max-pool has no MACs
    "resnet_7x7_nopool": 49 * 3 * 64 * P112 + 9 * 64 * 64 * P56,  # + the 3x3 s2 conv replacing the pool
    "xresnet_3conv": DEEP,  # 357.7 M
    "deep_tiered": 9 * 3 * 24 * P112 + 9 * 24 * 32 * P112 + 9 * 32 * 64 * P112,
    "deep_wide": 9 * 3 * 64 * P112 + 9 * 64 * 64 * P112 + 9 * 64 * 128 * P112 + 128 * 64 * P56,  # + 1x1 projection
    "deep_convpool": DEEP + 9 * 64 * 64 * P56,  # ResNet-RS: 3x3 s2 conv instead of the max-pool
    "conv2_s2": 9 * 3 * 64 * P112 + 9 * 64 * 64 * P56,
    "conv_stack": 9 * 3 * 32 * P112 + 9 * 32 * 64 * P56 + 1 * 64 * 64 * P56,  # 3x3 s2, 3x3 s2, 1x1
    # conv s2 (32) | basic block 32->32 at 112 px | s2 block 32->64: 3x3 s2, 3x3, avg-pool + 1x1 shortcut
    "resblock": 9 * 3 * 32 * P112 + 2 * 9 * 32 * 32 * P112 + (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) * P56,
    # conv s2 (32) | bottleneck 32->64 (mid 16) at 112 px with 1x1 shortcut | s2 bottleneck 64->64 (mid 16),
    # whose first 1x1 runs at 112 px and whose shortcut is a bare avg-pool
    "resblock_bottleneck": 9 * 3 * 32 * P112 + (32 * 16 + 9 * 16 * 16 + 16 * 64 + 32 * 64) * P112
    + 64 * 16 * P112 + (9 * 16 * 16 + 16 * 64) * P56,
    "patchify_4x4": 4 * 4 * 3 * 64 * P56,  # 9.6 M
    "patchify_2x2_s2": 2 * 2 * 3 * 64 * P112,  # the same 9.6 M: 4x fewer weights, 4x more positions
    "patchify_overlap": 7 * 7 * 3 * 64 * P56,
    "space_to_depth": 9 * (3 * 16) * 64 * P56,  # 48 channels after unshuffling 4x4 blocks
    "space": DEEP,  # the design space's default point is xresnet_3conv
    # conv s2 (32) | dw 3x3 (32) + pw 32->64 at 112 px | dw 3x3 s2 (64) + pw 64->64 at 56 px
    "dw_separable": 9 * 3 * 32 * P112 + (9 * 32 + 32 * 64) * P112 + (9 * 64 + 64 * 64) * P56,
}

# Parameters at out_channels = 96 (3 input channels), written out by hand: a conv has k*k * c_in/groups * c_out
# weights (+ c_out biases where no norm follows it, or in the ConvNeXt/PVT stems); a norm has a weight and a
# bias per channel. Only the last width follows out_channels: the inner widths keep their defaults.
O = 96


def NORM(c):
    return 2 * c


HAND_PARAMS_96 = {
    "resnet_7x7": 49 * 3 * O + NORM(O),
    "resnet_7x7_nopool": 49 * 3 * 64 + NORM(64) + 9 * 64 * O + NORM(O),
    "xresnet_3conv": 9 * 3 * 32 + NORM(32) + 9 * 32 * 32 + NORM(32) + 9 * 32 * O + NORM(O),
    "deep_tiered": 9 * 3 * 24 + NORM(24) + 9 * 24 * 32 + NORM(32) + 9 * 32 * O + NORM(O),
    "deep_wide": 9 * 3 * 64 + NORM(64) + 9 * 64 * 64 + NORM(64) + 9 * 64 * 128 + NORM(128) + 128 * O + NORM(O),
    "deep_convpool": 9 * 3 * 32 + NORM(32) + 9 * 32 * 32 + NORM(32) + 9 * 32 * 64 + NORM(64) + 9 * 64 * O + NORM(O),
    "conv2_s2": (9 * 3 * 64 + 64) + (9 * 64 * O + O) + NORM(O),
    "conv_stack": 9 * 3 * 32 + NORM(32) + 9 * 32 * 64 + NORM(64) + 64 * O + NORM(O),
    # conv (32) | basic block 32->32 | s2 basic block 32->O: 3x3, 3x3, and the shortcut's 1x1 + BN
    "resblock": 9 * 3 * 32 + NORM(32) + 2 * (9 * 32 * 32 + NORM(32))
    + (9 * 32 * O + NORM(O)) + (9 * O * O + NORM(O)) + (32 * O + NORM(O)),
    # conv (32) | bottleneck 32->64 (mid 16) with 1x1 shortcut | s2 bottleneck 64->O (mid O/4), 1x1 shortcut as 64 != O
    "resblock_bottleneck": 9 * 3 * 32 + NORM(32)
    + (32 * 16 + NORM(16)) + (9 * 16 * 16 + NORM(16)) + (16 * 64 + NORM(64)) + (32 * 64 + NORM(64))
    + (64 * (O // 4) + NORM(O // 4)) + (9 * (O // 4) ** 2 + NORM(O // 4)) + ((O // 4) * O + NORM(O)) + (64 * O + NORM(O)),
    "patchify_4x4": 4 * 4 * 3 * O + O + NORM(O),
    "patchify_2x2_s2": 2 * 2 * 3 * O + O + NORM(O),
    "patchify_overlap": 7 * 7 * 3 * O + O + NORM(O),
    "space_to_depth": 9 * (3 * 16) * O + NORM(O),
    "space": 9 * 3 * 32 + NORM(32) + 9 * 32 * 32 + NORM(32) + 9 * 32 * O + NORM(O),  # xresnet_3conv's
    # conv (32) | dw 3x3 (32) + pw 32->64 | dw 3x3 s2 (64) + pw 64->O
    "dw_separable": 9 * 3 * 32 + NORM(32) + (9 * 32 + NORM(32)) + (32 * 64 + NORM(64)) + (9 * 64 + NORM(64))
    + (64 * O + NORM(O)),
}


def one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.endswith(".") and ". " not in msg.rstrip(".")


def test_every_stem_has_a_hand_count_and_its_source():
    assert sorted(HAND_MACS) == ALL and sorted(HAND_PARAMS_96) == ALL
    for name in ALL:
        s = stems.spec(name)
        assert s.source and s.family and {"norm", "act"} <= set(s.defaults), name
        # the output width rule (stems/registry.py) relies on default widths ending in the default output width
        assert s.defaults.get("widths", [s.out_channels])[-1] == s.out_channels == 64, name


def test_anchor_counts_from_the_issue():
    assert round(HAND_MACS["resnet_7x7"] / 1e6) == 118
    assert round(HAND_MACS["xresnet_3conv"] / 1e6) == 358
    assert round(HAND_MACS["patchify_4x4"] / 1e5) == 96


@pytest.mark.parametrize("name", ALL)
def test_contract_two_sizes_one_or_three_channels(name):
    s = stems.spec(name)
    for c in (1, 3):
        stem = stems.build(name, c)
        for size in (28, 64):
            check_contract(stem, s, c, 64, size)  # raises StemError on a wrong shape
            with torch.no_grad():
                assert stem.eval()(torch.randn(1, c, size, size)).shape == (1, 64, size // 4, size // 4)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("out", [32, 96, 128])  # multiples of 4, as a bottleneck trunk needs
def test_every_stem_honours_out_channels(name, out):
    for c in (1, 3):
        stem = stems.build(name, c, out).eval()
        with torch.no_grad():
            assert stem(torch.randn(2, c, 32, 32)).shape == (2, out, 8, 8)


@pytest.mark.parametrize("name", ALL)
def test_params_at_out_channels_96_match_the_hand_count(name):
    assert sum(p.numel() for p in stems.build(name, 3, 96).parameters()) == HAND_PARAMS_96[name]
    assert cost(name, 3, 64, out_channels=96)["params"] == HAND_PARAMS_96[name]


# --- one network per name ------------------------------------------------------------------------

FIXED_INPUT = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def network(name: str) -> tuple[list, list, torch.Tensor]:
    """What makes a network: every module's type and hyper-parameters (kernel, stride, padding, groups,
    eps, ... as its extra_repr shows them), the parameter shapes, and the output for weights drawn from seed 0."""
    torch.manual_seed(0)
    stem = stems.build(name, 3).eval()
    layout = [(type(m).__name__, m.extra_repr()) for m in stem.modules()]
    with torch.no_grad():
        out = stem(FIXED_INPUT)
    return layout, [tuple(p.shape) for p in stem.parameters()], out


def same_network(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_no_two_registered_stems_build_the_same_network():
    zoo = [n for n in ALL if n != "space"]  # the design space's default point is a zoo stem by design (stems/space.py)
    built = {name: network(name) for name in zoo}
    twins = [(a, b) for a, b in combinations(zoo, 2) if same_network(built[a], built[b])]
    assert twins == [], "make one of each pair an alias: register(..., aliases=(name,))"
    # the check sees a twin: the alias 'deep' builds xresnet_3conv's network, timm's tiered stem does not
    assert same_network(network("deep"), built["xresnet_3conv"])
    assert not same_network(built["deep_tiered"], built["xresnet_3conv"])


def original_stem(library: str) -> nn.Module:
    if library == "torchvision":  # resnet18's conv1, bn1, relu, maxpool
        r = torchvision.models.resnet18()
        return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
    return nn.Sequential(*list(xresnet18(c_in=3).children())[:4])  # fastai: three ConvLayers (32, 32, 64) and the max-pool


@pytest.mark.parametrize("name, library", [("resnet_7x7", "torchvision"), ("xresnet_3conv", "fastai")])
def test_stems_citing_an_installed_library_are_its_original(name, library):
    ours, theirs = stems.build(name, 3).eval(), original_stem(library).eval()
    assert [type(m).__name__ for m in ours.modules() if not isinstance(m, nn.Sequential)] == \
        [type(m).__name__ for m in theirs.modules() if not isinstance(m, nn.Sequential)]
    with torch.no_grad():
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            a.copy_(b)  # same shapes required; theirs carry their library's initialisation
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("name, eps", [("patchify_overlap", 1e-5),  # PVT v2: nn.LayerNorm's default
                                       ("patchify_4x4", 1e-6), ("patchify_2x2_s2", 1e-6), ("conv2_s2", 1e-6)])  # ConvNeXt
def test_layernorm_eps_is_the_sources(name, eps):
    (norm,) = [m for m in stems.build(name, 3).modules() if isinstance(m, nn.LayerNorm)]
    assert norm.eps == eps


@pytest.mark.parametrize("name", ALL)
def test_forward_flops_at_224_match_the_hand_count(name):
    # counted on a real CPU forward here; profiler.stem_cost counts on the meta device: both must agree with the hand count
    stem = stems.build(name, 3).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        stem(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * HAND_MACS[name]
    assert cost(name, 3, 224)["flops"] == 2 * HAND_MACS[name]
    assert cost(name, 3, 224)["params"] == sum(p.numel() for p in stem.parameters())


@pytest.mark.parametrize("name", ALL)
def test_one_sgd_step_without_nan(name):
    torch.manual_seed(0)
    model = nn.Sequential(stems.build(name, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(model(x)).all()


def layer_kinds(stem: nn.Module) -> set[str]:
    """The kinds of layer a stem holds, its residual shortcuts aside (fastai's ResBlock keeps BatchNorm on its 1x1
    projection whatever the norm: stems/resblock.py)."""
    return {type(m).__name__ for n, m in stem.named_modules() if "idpath" not in n}


@pytest.mark.parametrize("name", ALL)
def test_norm_and_act_are_parameters(name):
    kinds = layer_kinds(stems.build(name, 3, norm="bn", act="relu"))
    assert {"BatchNorm2d", "ReLU"} <= kinds and not kinds & {"GELU", "SiLU", "LayerNorm2d", "LayerNorm"}
    kinds = layer_kinds(stems.build(name, 3, norm="none", act="gelu"))
    assert "GELU" in kinds and not kinds & {"ReLU", "BatchNorm2d", "LayerNorm2d", "LayerNorm"}
    if stems.spec(name).family == "resblock":
        with pytest.raises(stems.StemError, match="bn or none"):
            stems.build(name, 3, norm="ln")
    else:
        kinds = layer_kinds(stems.build(name, 3, norm="ln", act="silu"))
        assert {"LayerNorm2d", "SiLU"} <= kinds and not kinds & {"ReLU", "GELU", "BatchNorm2d"}


@pytest.mark.parametrize("name", WITH_WIDTHS)
def test_match_hits_flops_and_params_targets(name):
    base = cost(name, 3, 64)  # 64 px keeps the real forward below cheap; 224 px is covered by the hand counts
    for match, kind, target in [(f"flops:{0.6 * base['flops']:.0f}", "flops", 0.6 * base["flops"]),
                                (f"flops:{1.7 * base['flops'] / 1e6:.3f}M", "flops", 1.7 * base["flops"]),
                                (f"params:{1.5 * base['params']:.0f}", "params", 1.5 * base["params"])]:
        params, info = match_params(name, 3, 64, 64, match, {})
        assert info["target_kind"] == kind and info["target_spec"] == match
        assert info["target_value"] == pytest.approx(target, rel=1e-4)
        # rebuild the matched stem for real: contract holds and the cost is what match reported
        stem = stems.build(name, 3, **params)
        real = sum(p.numel() for p in stem.parameters())
        if kind == "flops":
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                stem.eval()(torch.randn(1, 3, 64, 64))
            real = counter.get_total_flops()
        assert real == info["achieved_value"]
        assert abs(real / target - 1) <= TOLERANCE


def test_match_against_another_stem_by_name():
    params, info = match_params("deep_wide", 3, 64, 224, "flops:xresnet_3conv", {})
    assert info["target_value"] == 2 * HAND_MACS["xresnet_3conv"]
    assert abs(info["achieved_value"] / info["target_value"] - 1) <= TOLERANCE
    assert params["widths"][-1] == 64 and params["widths"][0] < 64  # narrowed to a quarter of the cost


def test_match_at_out_channels_96():
    # a study with out_channels 96: the reference is counted at 96 too. xresnet_3conv at 64 px (maps 32x32):
    target = 2 * (9 * 3 * 32 + 9 * 32 * 32 + 9 * 32 * 96) * 32 * 32
    params, info = match_params("deep_wide", 3, 96, 64, "flops:xresnet_3conv", {})
    assert info["target_value"] == target and params["widths"][-1] == 96
    stem = stems.build("deep_wide", 3, 96, **params).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        assert stem(torch.randn(1, 3, 64, 64)).shape == (1, 96, 16, 16)
    assert counter.get_total_flops() == info["achieved_value"] and abs(info["achieved_value"] / target - 1) <= TOLERANCE


# --- bad input: one clear sentence each ---------------------------------------------------------

def test_unknown_parameter_names_it_and_lists_the_valid_ones():
    with pytest.raises(stems.StemError) as e:
        stems.build("xresnet_3conv", 3, widht=[32, 32, 64])
    msg = str(e.value)
    assert one_sentence(msg) and "widht" in msg and "widths, norm, act" in msg


@pytest.mark.parametrize("name, params, words", [
    ("xresnet_3conv", {"widths": [32, 32, 48]}, "end in 48, but the last width is the output width, out_channels=64"),
    ("xresnet_3conv", {"widths": [-32, 32, 64]}, "integers ≥ 1"),
    ("conv_stack", {"widths": [32, 0, 64]}, "integers ≥ 1"),
    ("resnet_7x7", {"kernel_size": 0}, "kernel size"),
    ("conv_stack", {"kernel_sizes": [3, 0, 1]}, "kernel_sizes must be positive"),
    ("conv_stack", {"strides": [2, 1, 1]}, "multiply to 2, but the stem contract needs 4"),
    ("conv_stack", {"strides": [2, 2]}, "must have 3 entries"),
    ("resblock_bottleneck", {"widths": [30, 64, 64]}, "multiples of the expansion 4"),
    ("xresnet_3conv", {"norm": "group"}, "norm must be one of"),
])
def test_invalid_values_give_one_sentence(name, params, words):
    with pytest.raises(stems.StemError) as e:
        stems.build(name, 3, **params)
    assert one_sentence(str(e.value)) and words in str(e.value), str(e.value)


def test_out_channels_not_divisible_by_the_bottleneck_expansion():
    with pytest.raises(stems.StemError) as e:
        stems.build("resblock_bottleneck", 3, 66)
    assert one_sentence(str(e.value)) and "multiples of the expansion 4" in str(e.value) and "66" in str(e.value)


def test_input_size_not_divisible_by_the_stride():
    with pytest.raises(stems.StemError) as e:
        stems.build("xresnet_3conv", 3, image_size=30)
    assert one_sentence(str(e.value)) and "30" in str(e.value) and "28 or 32" in str(e.value)
    stems.build("xresnet_3conv", 3, image_size=28)


def test_unreachable_match_gives_the_closest_value():
    with pytest.raises(stems.StemError) as e:
        match_params("resblock", 3, 64, 224, "flops:patchify_4x4", {})
    msg = str(e.value)
    assert one_sentence(msg) and "even at its narrowest, widths [8, 8, 64], it has" in msg and "MFLOPs" in msg
    with pytest.raises(stems.StemError, match="has no widths to scale"):
        match_params("resnet_7x7", 3, 64, 224, "flops:xresnet_3conv", {})
    with pytest.raises(stems.StemError, match="must read flops"):
        match_params("xresnet_3conv", 3, 64, 224, "macs:xresnet_3conv", {})


# --- the generated README table -----------------------------------------------------------------

def test_table_write_and_check(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\nold rows\n{END}\n\nafter\n")
    assert stems_main(["table", "--check", str(readme)]) == 1
    assert stems_main(["table", "--write", str(readme)]) == 0
    assert stems_main(["table", "--check", str(readme)]) == 0
    text = readme.read_text()
    assert text.endswith(f"{END}\n\nafter\n") and all(f"`{n}`" in text for n in ALL)
    with pytest.raises(stems.base.StemlabError, match="needs one"):
        splice("no markers", "t", "README.md")
    # bad input: one sentence on stderr, exit 2, the file untouched
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    capsys.readouterr()
    assert stems_main(["table", "--write", str(bare)]) == 2 and bare.read_text() == "no markers\n"
    assert stems_main(["table", "--check", str(tmp_path / "missing.md")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "needs one" in errors[0] and "does not exist" in errors[1]


def test_table_write_counts_the_stems_not_the_rows_of_other_tables(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n\n| other | table |\n|---|---|\n| `a` | 1 |\n| `b` | 2 |\n")
    assert stems_main(["table", "--write", str(readme)]) == 0
    text = readme.read_text()
    rows = text[text.index(START):text.index(END)].count("\n| `")  # the stem table's rows alone
    assert capsys.readouterr().out == f"wrote the stem table ({rows} stems) into {readme}.\n"


def test_readme_table_is_current():
    readme = ROOT / "README.md"
    assert stems_main(["table", "--check", str(readme)]) == 0, "run: python -m stems table --write README.md"


def test_manifest_is_current():
    # the stem config group (train.py --help, completion) is built from it without torch
    assert stems_main(["manifest", "--check"]) == 0, "run: python -m stems manifest --write"


def test_match_command(capsys):
    assert stems_main(["match", "deep_tiered", "flops:xresnet_3conv", "--size", "64"]) == 0
    assert "stem=deep_tiered stem.widths=[" in capsys.readouterr().out
    assert stems_main(["match", "patchify_4x4", "flops:xresnet_3conv"]) == 2
    err = capsys.readouterr().err
    assert "has no widths to scale" in err and one_sentence(err.strip())


def test_list_command_gives_parameters_defaults_and_cost(capsys):
    assert stems_main(["list", "--size", "64"]) == 0
    out = capsys.readouterr().out
    # xresnet_3conv by hand: 3x3 convs 3->32 (s2), 32->32, 32->64 = 864 + 9,216 + 18,432 weights + 2 x (32+32+64) BN;
    # at 64 px all three run on 32x32 maps: 2 x 28,512 MACs per pixel x 1,024 pixels = 58.4 MFLOPs
    block = out.split("xresnet_3conv (also: deep)")[1].split("\n")
    assert block[0] == "  [conv_stack]  28,768 params, 58.4 MFLOPs fwd @ 3x64x64"
    assert block[1:4] == ["    stem.out_channels=64", "    stem.widths=[32,32,64]", "    stem.norm=bn"]
    assert sum(not line.startswith(" ") for line in out.splitlines()) == len(stems.available())
    assert stems_main(["list", "--size", "30"]) == 2
    assert one_sentence(capsys.readouterr().err.strip())


# --- stem.match in a run -------------------------------------------------------------------------

def test_build_model_applies_match(caplog):
    from experiments.model import build_model

    caplog.set_level(logging.INFO, logger="stemlab")

    trunk = {"layers": [1, 1, 1, 1], "widths": [64, 128, 256, 512], "expansion": 1}
    model = build_model({"name": "deep_wide", "match": "flops:xresnet_3conv"}, trunk, 3, 10, image_size=64)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.stem.eval()(torch.randn(1, 3, 64, 64))
    assert abs(counter.get_total_flops() / cost("xresnet_3conv", 3, 64)["flops"] - 1) <= TOLERANCE
    # the match's result is in the log, not only in the record
    assert "stem.match=flops:xresnet_3conv: deep_wide widths" in caplog.text and "for a target of" in caplog.text
    with pytest.raises(stems.StemError, match="needs the run's input size"):
        build_model({"name": "deep_wide", "match": "flops:xresnet_3conv"}, trunk, 3, 10)


def test_build_model_with_out_channels_96():
    # the node as the stem config group gives it: the default widths end in 64, stem.out_channels=96 overrides
    from experiments.model import build_model

    trunk = {"layers": [1, 1, 1, 1], "widths": [64, 128, 256, 512], "expansion": 4}
    node = {"name": "deep_wide", "out_channels": 96, "match": None, "widths": [64, 64, 128, 64], "norm": "bn", "act": "relu"}
    model = build_model(node, trunk, 3, 10).eval()
    with torch.no_grad():
        assert model.stem(torch.randn(1, 3, 32, 32)).shape == (1, 96, 8, 8)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert model.stage1[0].convpath[0][0].in_channels == 96  # the trunk takes the stem's 96 channels


def test_run_records_the_match(make_cfg, tmp_path):
    import json

    import experiments

    experiments.run(make_cfg("stem=conv_stack", "stem.match=params:xresnet_3conv", "trunk.layers=[1,1,1,1]"), tmp_path)
    record = json.loads((tmp_path / "result.json").read_text())
    m = record["stem_match"]
    assert m["target_kind"] == "params" and m["target_spec"] == "params:xresnet_3conv" and m["image_size"] == 16
    assert m["target_value"] == cost("xresnet_3conv", 3, 16)["params"] and abs(m["achieved_value"] / m["target_value"] - 1) <= TOLERANCE
    assert m["widths"][-1] == 64 and m["widths"] != [32, 64, 64]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"
