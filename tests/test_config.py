"""Hydra composition and the one-sentence checks of command-line overrides."""
import pytest

from experiments.config import ConfigError, check_overrides, default_choice


def test_default_config_is_the_embedded_default(make_cfg):
    cfg = make_cfg(tiny=False)
    assert (cfg.stem.name, cfg.trunk.name, cfg.data.name, cfg.logger.name) == ("xresnet_3conv", "xresnet18", "mnist5k", "wandb")
    assert cfg.logger.mode == "offline" and default_choice("stem") == "xresnet_3conv"


def test_overrides_reach_every_group(make_cfg):
    cfg = make_cfg("stem=resnet_7x7", "trunk=xresnet50", "train.epochs=3", "train.lr=0.01", "train.bs=16", "seed=7",
                   "stem.kernel_size=5")
    assert (cfg.stem.name, cfg.stem.kernel_size, cfg.trunk.expansion) == ("resnet_7x7", 5, 4)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.bs, cfg.seed) == (3, 0.01, 16, 7)


def test_stem_parameters_are_overridable(make_cfg):
    assert list(make_cfg("stem.widths=[24,32,64]").stem.widths) == [24, 32, 64]


@pytest.mark.parametrize("override,message", [
    ("stem=nope", r"unknown stem 'nope'; choose one of: .*patchify_4x4, .*resnet_7x7, .*xresnet_3conv\."),
    ("trunk=nope", r"unknown trunk 'nope'; choose one of: xresnet18, xresnet34, xresnet50\."),
    ("data=nope", r"unknown data 'nope'; choose one of: .*mnist5k, .*synthetic"),
    ("stem=resnet_7x7,nope", r"unknown stem 'nope'"),
    ("stem.widht=[1]", r"stem 'xresnet_3conv' has no parameter 'widht'; its parameters are: out_channels, match, widths, norm, act\."),
])
def test_bad_choices_are_one_sentence(override, message):
    with pytest.raises(ConfigError, match=message):
        check_overrides([override])


def test_stem_parameter_is_checked_against_every_swept_stem():
    check_overrides(["stem=xresnet_3conv", "stem.widths=[24,32,64]"])
    with pytest.raises(ConfigError, match="stem 'resnet_7x7' has no parameter 'widths'"):
        check_overrides(["stem=xresnet_3conv,resnet_7x7", "stem.widths=[24,32,64]"])


def test_help_lists_every_registered_stem():
    import stems
    from tests.conftest import run_cli

    proc = run_cli("--help")
    stem_line = next(line for line in proc.stdout.splitlines() if line.startswith("stem: "))
    assert stem_line.removeprefix("stem: ").split(", ") == stems.available()
