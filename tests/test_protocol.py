"""The fair protocol (hydra/sweeper=tuned): tune each stem's LR on the tuning split, then train over the seeds at the
chosen LR; the choice rule, the preset, one tiny two-stage sweep end to end, and its resumption."""
import json
import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments.config import CONF_DIR, register_configs
from hydra_plugins.stemlab_tuned_sweeper._protocol import (Grid, NoUsableLR, ProtocolError, TuneResult, check_bounds, choose_lr,
                                                          extend_grid, mean_accuracy, seed_table, tuning_record)
from tests.conftest import TINY, run_cli

NAN = math.nan


def test_choice_rule_on_one_tuning_seed_is_the_best_lr():
    # one seed gives no noise estimate: the plateau is the best LR (or a tie), the fit picks among a tie
    lrs = [0.001, 0.002, 0.004, 0.008]
    assert choose_lr(lrs, [0.50, 0.75, 0.70, 0.25]).lr == 0.002  # the highest accuracy
    assert choose_lr(lrs, [NAN, 0.25, NAN, 0.25]).lr == 0.002  # NaN (failed, diverged) is never chosen; a tie without a fit: the smaller
    assert choose_lr(lrs, [NAN, NAN, NAN, 0.10]).lr == 0.008
    with pytest.raises(NoUsableLR, match="no learning rate"):
        choose_lr(lrs, [NAN] * 4)
    # over tuning seeds: the mean, and an LR that failed on any seed is unusable
    assert mean_accuracy([0.5, 0.75]) == 0.625
    assert math.isnan(mean_accuracy([0.9, NAN]))
    assert choose_lr(lrs, [[0.5, 0.5], [0.9, NAN], [0.6, 0.6], [0.4, 0.4]]).lr == 0.004


def test_grid_extends_at_each_edge_the_plateau_reaches():
    bounds, grid3 = (1e-4, 0.1), [0.001, 0.004, 0.016]
    # one seed (no noise estimate): the plateau is the best LR. At the top: one more step of the grid's ratio (x4)
    # there; at the bottom: one step down (/4); inside: the grid is done
    assert extend_grid(grid3, [0.90, 0.92, 0.93], bounds) == [0.064]
    assert extend_grid(grid3, [0.95, 0.92, 0.93], bounds) == [0.00025]
    assert extend_grid(grid3, [0.90, 0.95, 0.94], bounds) == []
    # a tie at the top is a plateau reaching the top: its extent is unknown there
    assert extend_grid(grid3, [0.90, 0.95, 0.95], bounds) == [0.064]
    # two seeds, a flat curve within the noise (sd 1 pt): the plateau is the whole grid, both ends extend
    assert extend_grid(grid3, [[0.94, 0.95], [0.95, 0.94], [0.945, 0.955]], bounds) == [0.00025, 0.064]
    # the bound stops it: 0.064 x 4 = 0.256 > 0.1; 0.00025 / 4 = 0.0000625 < 0.0001
    assert extend_grid([0.004, 0.016, 0.064], [0.90, 0.92, 0.93], bounds) == []
    assert extend_grid([0.00025, 0.001, 0.004], [0.95, 0.92, 0.90], bounds) == []
    # nothing usable, or one LR (no step to take): no extension
    assert extend_grid([0.001, 0.004], [NAN, NAN], bounds) == []
    assert extend_grid([0.004], [0.9], bounds) == []
    # a failed LR is off the plateau: a plateau that ends below it is inside
    assert extend_grid(grid3, [0.90, 0.93, NAN], bounds) == []


def test_resuming_in_any_order_keeps_the_choice_and_tuning_json():
    # a resumed sweep gets its tuning runs back from their records, perhaps in another order (a parallel
    # launcher's): the table, the choice, its plateau and stability, and tuning.json are the same
    g = grid("stem=resnet_7x7,patchify_4x4", lrs=(0.001, 0.004, 0.016), tune_seeds=(0, 1))
    accuracy = {(0.001, 0): 0.90, (0.001, 1): 0.91, (0.004, 0): 0.95, (0.004, 1): 0.93, (0.016, 0): 0.94, (0.016, 1): 0.96}
    results = [TuneResult(job, accuracy[(job.lr, job.seed)] - 0.1 * g.arms.index(job.arm), f"tune/{i}", 1.0)
               for i, job in enumerate(g.tune_jobs())]
    arm_lrs = {arm: list(g.lrs) for arm in g.arms}

    def record(runs):
        table = seed_table(arm_lrs, runs)
        choices = {arm: choose_lr(arm_lrs[arm], table[arm]) for arm in g.arms}
        return tuning_record(g, runs, arm_lrs, choices, {}, (1e-4, 0.1))

    first, resumed = record(results), record(results[::-1])
    assert [arm["chosen_lr"] for arm in first["arms"]] == [0.004, 0.004]
    assert [arm["stability"] for arm in first["arms"]] == [0.75, 0.75]  # as tests/test_lr_choice.py derives by hand
    assert {**first, "arms": [{**a, "runs": sorted(a["runs"], key=str)} for a in first["arms"]]} == \
        {**resumed, "arms": [{**a, "runs": sorted(a["runs"], key=str)} for a in resumed["arms"]]}


@pytest.mark.parametrize("bounds", [(0.002, 0.1), (1e-4, 0.008), (0.1, 1e-4), (1e-4,), (0, 0.1)])
def test_bounds_must_enclose_the_grid(bounds):
    with pytest.raises(ProtocolError, match="lr_bounds"):
        check_bounds(bounds, [0.001, 0.004, 0.016])


def grid(*overrides, lrs=(0.004, 0.001), tune_seeds=(0,)):
    return Grid.from_overrides(OverridesParser.create().parse_overrides(list(overrides)), lrs, tune_seeds)


def test_grid_splits_points_into_arms_and_seeds():
    g = grid("data=synthetic", "stem=resnet_7x7,patchify_4x4", "seed=0,1,2")
    assert g.lrs == [0.001, 0.004]  # ascending
    assert [a.name() for a in g.arms] == ["stem=resnet_7x7", "stem=patchify_4x4"]
    assert [(j.arm.name(), j.lr, j.seed) for j in g.tune_jobs()] == \
        [("stem=resnet_7x7", 0.001, 0), ("stem=resnet_7x7", 0.004, 0), ("stem=patchify_4x4", 0.001, 0), ("stem=patchify_4x4", 0.004, 0)]
    assert g.tune_jobs()[0].overrides() == ["data=synthetic", "stem=resnet_7x7", "seed=0", "train.lr=0.001", "data.tune_split=true"]
    assert g.final_overrides(g.arms[1], 0.004) == [["data=synthetic", "stem=patchify_4x4", f"seed={s}", "train.lr=0.004",
                                                     "data.tune_split=false"] for s in (0, 1, 2)]
    # without a seed on the command line the final runs use the config's
    assert grid("stem=resnet_7x7").final_overrides(grid("stem=resnet_7x7").arms[0], 0.001) == \
        [["stem=resnet_7x7", "train.lr=0.001", "data.tune_split=false"]]


@pytest.mark.parametrize("override, lrs, message", [
    ("train.lr=0.1", (0.001,), "hydra.sweeper.lrs"),
    ("data.tune_split=true", (0.001,), "sets it per stage"),
    ("stem=resnet_7x7", (), "distinct positive learning rates"),
    ("stem=resnet_7x7", (0.001, 0.001), "distinct positive learning rates"),
    ("stem=resnet_7x7", (-0.1,), "distinct positive learning rates"),
])
def test_grid_refuses_what_the_protocol_decides(override, lrs, message):
    with pytest.raises(ProtocolError, match=message):
        grid(override, lrs=lrs)


def test_tuned_study_preset():
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["+experiment=stem_study_mnist5k_tuned"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    # the quick study's settings, with the protocol's sweeper and grid
    assert (cfg.study, cfg.trunk.name, cfg.data.name, cfg.train.epochs) == ("stem_study_mnist5k_tuned", "xresnet18", "mnist5k", 2)
    assert cfg.hydra.sweeper._target_.endswith("TunedSweeper") and cfg.hydra.sweep.dir == "multirun/stem_study_mnist5k_tuned"
    assert list(cfg.hydra.sweeper.lrs) == [0.001, 0.004, 0.016] and list(cfg.hydra.sweeper.tune_seeds) == [0, 1]
    assert list(cfg.hydra.sweeper.lr_bounds) == [0.0001, 0.1]
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == \
        {"stem": "resnet_7x7,xresnet_3conv,patchify_4x4,dw_separable", "seed": "range(8)"}
    assert (cfg.compare.reference, cfg.compare.margin, cfg.compare.same_ranking_tau) == ("resnet_7x7", 1.0, 0.6)
    assert cfg.data.split_by_seed is True  # a split per seed: the intervals include the data-sampling variance


@pytest.mark.parametrize("preset", ["stem_study_mnist5k", "stem_study_mnist5k_tuned", "stem_study_imagenette_cpu",
                                    "stem_study_imagenette"])
def test_study_presets_name_their_reference_and_run_five_seeds(preset):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    seeds = OverridesParser.create().parse_overrides([f"seed={cfg.hydra.sweeper.params.seed}"])[0]
    assert len(list(seeds.sweep_string_iterator())) >= 5
    assert cfg.compare.reference in cfg.hydra.sweeper.params.stem or cfg.hydra.sweeper.params.stem.startswith("glob(")


def records(directory):
    return {p.parent.name: json.loads(p.read_text()) for p in directory.glob("*/result.json")}


@pytest.mark.slow
def test_tiny_tuned_sweep_tunes_chooses_trains_and_resumes(tmp_path):
    sweep = tmp_path / "study"
    lrs = [0.001, 0.01]
    # stem.out_channels=0 breaks a stem at build time: every tuning run of those arms fails, so they get no LR
    args = ["-m", "+experiment=stem_study_mnist5k_tuned", *TINY, "data.num_classes=2", "stem=resnet_7x7,patchify_4x4",
            "stem.out_channels=64,0", "seed=0,1", f"hydra.sweeper.lrs=[{lrs[1]},{lrs[0]}]", f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.tune_seeds=[0]", f"hydra.sweeper.lr_bounds=[{lrs[0]},{lrs[1]}]"]  # the grid cannot extend
    proc = run_cli(*args, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # stage 1: every (stem, out_channels) at every lr, tuning seed 0, on the tuning split
    tune = records(sweep / "tune")
    assert len(tune) == 8
    assert all(r["config"]["data"]["tune_split"] is True and r["config"]["seed"] == 0 for r in tune.values())
    assert all("train.lr=" in d and "tune_split" not in d for d in tune)
    accuracy = {}  # (stem, out_channels) -> {lr: tuning accuracy}
    for r in tune.values():
        arm = (r["config"]["stem"]["name"], r["config"]["stem"]["out_channels"])
        assert r["status"] == ("completed" if arm[1] == 64 else "failed")
        accuracy.setdefault(arm, {})[r["config"]["train"]["lr"]] = r.get("metrics", {}).get("valid_acc")
    # the choice by hand (one tuning seed: the plateau is the best LR, or a tie whose middle is the smaller LR):
    # the highest accuracy, a tie to the smaller lr; the failed arms get none
    expected = {arm: sorted(accs.items(), key=lambda item: (-item[1], item[0]))[0][0]
                for arm, accs in accuracy.items() if arm[1] == 64}
    assert set(expected) == {("resnet_7x7", 64), ("patchify_4x4", 64)}

    # stage 2: every arm x seed at its chosen lr on the validation set; the failed arms' points say why
    final = records(sweep / "final")
    assert len(final) == 8 and not any("train.lr" in d or "tune_split" in d for d in final)
    for r in final.values():
        arm = (r["config"]["stem"]["name"], r["config"]["stem"]["out_channels"])
        assert r["config"]["data"]["tune_split"] is False
        if arm in expected:
            assert r["status"] == "completed" and r["config"]["train"]["lr"] == expected[arm]
        else:
            assert r["status"] == "failed" and "no learning rate of [0.001, 0.01]" in r["error"]
            assert r["config"]["train"]["lr"] is None
    assert sorted((r["config"]["stem"]["name"], r["config"]["stem"]["out_channels"], r["config"]["seed"]) for r in final.values()) == \
        sorted((s, c, i) for s in ("resnet_7x7", "patchify_4x4") for c in (64, 0) for i in (0, 1))

    # tuning.json: the grid, each arm's accuracies per lr (from its records) and its choice
    tuning = json.loads((sweep / "tuning.json").read_text())
    assert (tuning["lrs"], tuning["tune_seeds"], tuning["lr_bounds"]) == (lrs, [0], lrs)
    assert tuning["wall_s"] == pytest.approx(sum(r["wall_s"] for r in tune.values()))
    for entry in tuning["arms"]:
        arm = (entry["swept"]["stem"], int(entry["swept"]["stem.out_channels"]))
        assert entry["mean_acc"] == [accuracy[arm][lr] for lr in lrs] and entry["lrs"] == lrs
        assert entry["sd_acc"] == [None, None]  # one tuning seed: no spread
        assert entry["chosen_lr"] == expected.get(arm)
        assert (entry["error"] is None) == (arm in expected)
        assert sorted(run["dir"] for run in entry["runs"]) == \
            sorted(f"tune/{d}" for d, r in tune.items() if (r["config"]["stem"]["name"], r["config"]["stem"]["out_channels"]) == arm)
        # the choice is in the log too, one line per arm
        said = f"tuned: {entry['name']} trains at lr {entry['chosen_lr']:g}" if arm in expected else f"tuned: {entry['name']}: no learning rate"
        assert said in proc.stdout + proc.stderr

    # re-running the command re-uses every completed run of both stages and makes the same choice
    completed = [p for p in sweep.glob("*/*/result.json") if json.loads(p.read_text())["status"] == "completed"]
    mtimes = {p: p.stat().st_mtime_ns for p in completed}
    proc = run_cli(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("already completed") == len(completed) == 8
    assert {p: p.stat().st_mtime_ns for p in completed} == mtimes
    # the same choice from the same records; only the failed runs, tried again, took new wall time
    assert without_wall_times(json.loads((sweep / "tuning.json").read_text())) == without_wall_times(tuning)


def without_wall_times(tuning):
    return {**{k: v for k, v in tuning.items() if k != "wall_s"},
            "arms": [{**arm, "runs": [{k: v for k, v in r.items() if k != "wall_s"} for r in arm["runs"]]} for arm in tuning["arms"]]}


@pytest.mark.slow
def test_the_grid_extends_until_the_plateau_is_inside_or_a_bound_stops_it(tmp_path):
    sweep, bounds = tmp_path / "ext", [0.0003, 0.01]
    # grid (0.003, 0.01), ratio 10/3: at the top the bound stops it at once; at the bottom it may step to 0.0009
    # (one tuning seed: the plateau is the best LR or a tie, common on 16 tiny images), then 0.00027 is below the bound
    proc = run_cli("-m", "hydra/sweeper=tuned", *TINY, "data.num_classes=2", "stem=resnet_7x7", "seed=0",
                   "hydra.sweeper.lrs=[0.003,0.01]", "hydra.sweeper.tune_seeds=[0]",
                   f"hydra.sweeper.lr_bounds=[{bounds[0]},{bounds[1]}]", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (arm,) = json.loads((sweep / "tuning.json").read_text())["arms"]
    lrs, acc = arm["lrs"], [NAN if a is None else a for a in arm["mean_acc"]]
    assert lrs == sorted(lrs) and {0.003, 0.01} <= set(lrs) and set(lrs) <= {0.0009, 0.003, 0.01}
    assert sorted(r["lr"] for r in arm["runs"]) == lrs  # every LR of the extended grid was tuned
    assert extend_grid(lrs, acc, bounds) == []             # and the loop stopped where the rule says
    assert arm["chosen_lr"] == choose_lr(lrs, acc).lr
    (final,) = records(sweep / "final").values()
    assert final["config"]["train"]["lr"] == arm["chosen_lr"]


def test_lr_on_the_command_line_is_refused(tmp_path):
    proc = run_cli("-m", "hydra/sweeper=tuned", *TINY, "stem=resnet_7x7", "train.lr=0.1", f"hydra.sweep.dir={tmp_path / 's'}",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: train.lr=0.1 cannot be given to the tuned sweeper: give the candidates as hydra.sweeper.lrs=[...]." \
        in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s" / "tune").exists()
