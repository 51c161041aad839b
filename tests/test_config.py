"""Hydra composition through the structured configs, and the checks that refuse a bad setting before anything
runs: one sentence naming the key and its accepted values, exit 2, no directory."""
import dataclasses
import os

import pytest
from omegaconf import OmegaConf

import stems
from experiments import schema
from stems import manifest
from experiments.config import ConfigError, check_command_line
from tests.conftest import TINY, run_cli

RAM = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_default_config_is_the_embedded_default(make_cfg):
    cfg = make_cfg(tiny=False)
    assert (cfg.stem.name, cfg.trunk.name, cfg.data.name, cfg.logger.name) == ("xresnet_3conv", "xresnet18", "mnist5k", "wandb")
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.bs, cfg.seed, cfg.logger.mode) == (3, 0.004, 64, 0, "offline")
    assert (cfg.data.tune_split, cfg.data.tune_pct, cfg.profile.batch_size, cfg.study) == (False, 0.1, None, None)
    # every node is typed by its schema: that is what refuses unknown keys and wrong types
    assert OmegaConf.get_type(cfg.data) is schema.Mnist5kConf and OmegaConf.get_type(cfg.train) is schema.TrainConf
    assert OmegaConf.get_type(cfg.stem).__name__ == "Stem_xresnet_3conv"


def test_overrides_reach_every_group(make_cfg):
    cfg = make_cfg("stem=resnet_7x7", "trunk=xresnet50", "train.epochs=3", "train.lr=0.01", "train.bs=16", "seed=7",
                   "stem.kernel_size=5", "data.tune_split=true", "data.tune_pct=0.2", "profile.latency=true",
                   "profile.batch_size=4", "train.channels_last=false")
    assert (cfg.stem.name, cfg.stem.kernel_size, cfg.trunk.expansion, list(cfg.trunk.layers)) == ("resnet_7x7", 5, 4, [3, 4, 6, 3])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.bs, cfg.seed) == (3, 0.01, 16, 7)
    assert (cfg.data.tune_split, cfg.data.tune_pct, cfg.profile.latency, cfg.profile.batch_size) == (True, 0.2, True, 4)
    assert cfg.train.channels_last is False
    # a string from the command line is converted to the key's type (here a float)
    assert isinstance(make_cfg("train.lr=1").train.lr, float)


def test_stem_parameters_are_overridable_and_typed_from_the_factory(make_cfg):
    assert list(make_cfg("stem.widths=[24,32,64]").stem.widths) == [24, 32, 64]
    # xresnet_3conv's factory annotates widths as tuple[int, ...]: the schema holds a list of ints
    node = schema.stem_schema("xresnet_3conv", manifest.load()["xresnet_3conv"])
    assert {f.name: f.type for f in dataclasses.fields(node)}["widths"] == schema.List[int]


@pytest.mark.parametrize("annotation,default,text,config_type", [
    (int, 7, "int", int), (tuple[int, ...], (32, 64), "list[int]", schema.List[int]), (bool, True, "bool", bool),
    (int | None, None, "int | None", schema.Optional[int]), (None, 0.5, "float", float), (dict, {}, "any", schema.Any),
])
def test_a_parameter_type_goes_through_the_manifest_as_text(annotation, default, text, config_type):
    assert manifest.type_text(annotation, default) == text
    assert schema.config_type(text) == config_type


def test_a_stale_manifest_refuses_a_run_naming_the_command_that_regenerates_it(tmp_path, monkeypatch):
    entries = manifest.load()
    entries["resnet_7x7"]["params"]["kernel_size"]["default"] = 5  # the registry's default is 7
    monkeypatch.setattr(manifest, "PATH", tmp_path / "manifest.json")
    manifest.PATH.write_text(manifest.render(entries))
    refusal = r"^stem 'resnet_7x7' has other parameters or defaults than its registration in manifest.json, .*" \
              r"regenerate it with `python -m stems generate`\.$"
    with pytest.raises(ConfigError, match=refusal):
        check_command_line([*TINY])
    del entries["resnet_7x7"]
    manifest.PATH.write_text(manifest.render(entries))
    assert manifest.stale().startswith("stem 'resnet_7x7' is missing in manifest.json")
    manifest.PATH.write_text('{"resnet_7x7": ')  # cut short: the group cannot be built, --help included
    with pytest.raises(stems.base.StemlabError, match=r"manifest.json cannot be read \(JSONDecodeError\); regenerate "
                                                      r"it with `python -m stems generate`\.$"):
        schema.register_configs()
    assert manifest.stale().endswith("regenerate it with `python -m stems generate`.")


def test_study_preset_composes(make_cfg):
    cfg = make_cfg("+experiment=stem_study_mnist5k", tiny=False)
    assert (cfg.study, cfg.logger.group, list(cfg.logger.tags), cfg.train.epochs) == \
        ("stem_study_mnist5k", "stem_study_mnist5k", ["study:stem_study_mnist5k"], 2)


def test_valid_command_lines_pass_the_checks():
    assert check_command_line([*TINY, "stem=resnet_7x7", "stem.kernel_size=5"]) == 1
    # a sweep is checked point by point: 2 stems x 2 seeds, and the study preset's 4 stems x 5 seeds
    assert check_command_line([*TINY, "stem=resnet_7x7,patchify_4x4", "seed=0,1"], multirun=True) == 4
    assert check_command_line(["+experiment=stem_study_mnist5k", "logger=none"], multirun=True) == 20


@pytest.mark.parametrize("override,message", [
    ("train.epochs=-2", "train.epochs=-2 is not valid; use an integer ≥ 1."),
    ("train.lr=-1", "train.lr=-1.0 is not valid; use a number > 0."),
    ("train.wd=-0.1", "train.wd=-0.1 is not valid; use a number ≥ 0."),
    ("+train.epoch=5", "train has no key 'epoch'; its keys are: epochs, lr, bs, wd, label_smoothing, device, precision, "
                       "channels_last, save_model, keep_checkpoints."),
    ("train.epoch=5", "train has no key 'epoch'; its keys are: epochs, lr, bs, wd, label_smoothing, device, precision, "
                      "channels_last, save_model, keep_checkpoints."),
    ("+foo=1", "the config has no key 'foo'; its keys are: stem, trunk, data, train, logger, seed, profile, study, compare."),
    ("train.epochs=abc", "train.epochs=abc is not valid; use an integer ≥ 1."),
    ("train.bs=0", "train.bs=0 is not valid; use an integer ≥ 1."),
    ("train.label_smoothing=2", "train.label_smoothing=2.0 is not valid; use a number in [0, 1)."),
    ("train.device=tpu", "train.device=tpu is not valid; use one of auto, cpu, cuda."),
    ("train.precision=fp8", "train.precision=fp8 is not valid; use one of auto, fp32, bf16, fp16."),
    ("train.channels_last=1", "train.channels_last=1 is not valid; use auto, true or false."),
    ("profile.latency=maybe", "profile.latency=maybe is not valid"),
    ("profile.budget_s=-1", "profile.budget_s=-1.0 is not valid; use a number ≥ 0, or null for no budget."),
    ("compare.margin=0", "compare.margin=0.0 is not valid; use a number > 0 (accuracy points)."),
    ("compare.same_ranking_tau=1.5", "compare.same_ranking_tau=1.5 is not valid; use a number in (-1, 1]."),
    ("compare.reference=a/b", "compare.reference=a/b is not valid; use a name made of letters, digits, _ and - only."),
    ("data.tune_pct=0.5", "data.tune_pct=0.5 is not valid; use a number in (0, 0.5)."),
    ("seed=-1", "seed=-1 is not valid; use an integer ≥ 0."),
    ("trunk.name=my/trunk", "trunk.name=my/trunk is not valid; use a name made of letters, digits, _ and - only."),
    ("stem.widths=[a]", "stem.widths=[a] is not valid: Value 'a' of type 'str' could not be converted to Integer."),
    ("stem.match=flops", "stem.match=flops is not valid; use flops:<stem or number>, params:<stem or number> or "
                         "time:<stem or milliseconds like 2.5ms>."),
    ("stem.name=resnet_7x7", "stem.name=resnet_7x7 differs from the chosen stem 'xresnet_3conv'; choose another stem "
                             "with stem=NAME, not stem.name."),
    # 30 px is not a multiple of the stem's stride 4: the nearest multiples are 28 and 32
    ("data.image_size=30", "data.image_size=30: input size 30 is not divisible by stem 'xresnet_3conv''s stride 4; "
                           "use a multiple of 4 such as 28 or 32."),
    ("stem=nope", "unknown stem 'nope'; choose one of: conv2_s2, "),
    ("stem=deep", "stem 'deep' is an alias of 'xresnet_3conv' (one network, one name in a study); use stem=xresnet_3conv."),
    ("trunk=nope", "unknown trunk 'nope'; choose one of: xresnet18, xresnet34, xresnet50."),
    ("data=nope", "unknown data 'nope'; choose one of: imagenette, mnist, mnist5k, synthetic."),
    ("stem.widht=[1]", "stem 'xresnet_3conv' has no parameter 'widht'; its parameters are: out_channels, match, widths, "
                       "norm, act."),
    ("+stem.widht=[1]", "stem 'xresnet_3conv' has no parameter 'widht'"),
])
def test_bad_settings_are_one_sentence(override, message):
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, override])
    assert str(refused.value).startswith(message)


def test_image_size_is_bounded_by_memory():
    # TINY: train.bs=8, synthetic RGB. An fp32 batch takes 8 * 3 * S^2 * 4 bytes, at most RAM/16, so the largest
    # side is floor(sqrt(RAM / 16 / 96)) rounded down to the stem's stride 4.
    largest = int((RAM / 16 / (8 * 3 * 4)) ** 0.5) // 4 * 4
    with pytest.raises(ConfigError, match=rf"^data\.image_size=100000 with train\.bs=8 is too large for this machine: "
                                          rf"a batch of 8×3×100000×100000 fp32 images needs 894\.1 GiB, .*; "
                                          rf"use data\.image_size ≤ {largest} or train\.bs ≤ "):
        check_command_line([*TINY, "data.image_size=100000"])
    check_command_line([*TINY, f"data.image_size={largest}"])


def test_a_sweep_is_refused_for_one_bad_point():
    with pytest.raises(ConfigError, match=r"^train\.lr=-1\.0 is not valid"):
        check_command_line([*TINY, "seed=0,1", "train.lr=0.1,-1"], multirun=True)
    # a stem parameter must exist for every swept stem
    check_command_line([*TINY, "stem=xresnet_3conv,resblock", "stem.widths=[24,32,64]"], multirun=True)
    with pytest.raises(ConfigError, match="stem 'resnet_7x7' has no parameter 'widths'"):
        check_command_line([*TINY, "stem=xresnet_3conv,resnet_7x7", "stem.widths=[24,32,64]"], multirun=True)


@pytest.mark.parametrize("args,key", [
    (["train.epochs=-2"], "train.epochs"),
    (["train.lr=-1"], "train.lr"),
    (["+train.epoch=5"], "'epoch'"),
    (["train.epochs=abc"], "train.epochs"),
    (["train.bs=0"], "train.bs"),
    (["train.label_smoothing=2"], "train.label_smoothing"),
    (["train.device=tpu"], "train.device"),
    (["data.image_size=100000"], "data.image_size"),
    (["trunk.name=a/b"], "trunk.name"),
    (["-m", "seed=0,1", "train.bs=8,0"], "train.bs"),
])
def test_cli_refuses_before_writing_anything(tmp_path, args, key):
    flags, overrides = [a for a in args if a.startswith("-")], [a for a in args if not a.startswith("-")]
    proc = run_cli(*flags, *TINY, *overrides, f"hydra.run.dir={tmp_path / 'out' / 'run'}", f"hydra.sweep.dir={tmp_path / 'out' / 'sweep'}",
                   cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run or sweep directory, no outputs/ or multirun/


def test_help_lists_every_registered_stem():
    proc = run_cli("--help")
    stem_line = next(line for line in proc.stdout.splitlines() if line.startswith("stem: "))
    assert stem_line.removeprefix("stem: ").split(", ") == stems.available()
    assert "FutureWarning" not in proc.stderr
