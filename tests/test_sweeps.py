"""Sweeps through Hydra's launchers (basic, joblib, submitit local): resumable, failure-tolerant, one W&B group;
the launcher and study presets compose into what the plugins and submitit accept."""
import json
import logging
import os
import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import stems
from analyze.report.data import read_records, sweep_points
from analyze.report.statistics import stem_table
from analyze.report.studies import split_studies
from experiments import sweep as sweep_point
from experiments.config import CONF_DIR, register_configs
from experiments.record import write_record
from tests.conftest import TINY, run_cli

TINY_SWEEP = [*TINY, "stem=resnet_7x7,patchify_4x4", "seed=0,1"]


def records(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


@pytest.mark.slow
def test_basic_sweep_records_failures_resumes_and_reports(tmp_path):
    sweep = tmp_path / "study"
    # a 2-stage trunk against 4 stage widths fails when the model is built (the config check does not build
    # trunks): those points fail, the others complete
    args = ["-m", "+experiment=stem_study_mnist5k", "hydra/launcher=basic", *TINY_SWEEP, "trunk.layers=[1,1,1,1],[1,1]",
            f"hydra.sweep.dir={sweep}"]  # one point after another: the preset's parallel launcher is overridden
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(sweep)
    assert len(recs) == 8
    done = {k: r for k, r in recs.items() if r["status"] == "completed"}
    failed = {k: r for k, r in recs.items() if r["status"] == "failed"}
    assert len(done) == 4 and all("trunk.layers=[1,1,1,1]" in k for k in done)
    assert len(failed) == 4 and all("must have the same length" in r["error"] and r["config"]["trunk"]["layers"] == [1, 1]
                                    for r in failed.values())
    assert proc.stdout.strip().splitlines()[-1] == (f"Sweep ended: 4 of 8 points done, 4 failed (or without a record), "
                                                    f"0 skipped (completed before); report: python -m analyze report {sweep}")
    # the point's directory is its overrides (not a timestamp or job number): the same command finds it again
    assert "seed=0,stem=resnet_7x7,train.bs=8,train.channels_last=False,train.epochs=1,train.precision=fp32,trunk.layers=[1,1,1,1]" in "".join(done)
    again, garbled = sorted(done)[:2]
    (sweep / again / "result.json").write_text(json.dumps({**done[again], "status": "failed"}))
    (sweep / garbled / "result.json").write_bytes(b'{"status": "completed\xff"}')  # a non-UTF-8 byte
    mtimes = {k: (sweep / k / "result.json").stat().st_mtime_ns for k in done if k not in (again, garbled)}

    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("already completed") == 2 and "Traceback" not in log
    assert f"{sweep / garbled / 'result.json'}: is not UTF-8 text (byte 21); re-running this point" in log
    assert records(sweep)[again]["status"] == records(sweep)[garbled]["status"] == "completed"
    assert {k: (sweep / k / "result.json").stat().st_mtime_ns for k in mtimes} == mtimes
    assert proc.stdout.strip().splitlines()[-1].startswith("Sweep ended: 2 of 8 points done, 4 failed (or without a "
                                                           "record), 2 skipped (completed before); report: ")

    # the two trunks are two studies (never averaged together): the failed one reports its stems with no runs
    tables = {len(s.runs[0].config["trunk"]["layers"]): stem_table(s).set_index("stem")
              for s in split_studies(read_records(sweep).runs)}
    assert tables[4].loc[["patchify_4x4", "resnet_7x7"], "n"].tolist() == [2, 2]
    assert tables[2].loc[["patchify_4x4", "resnet_7x7"], "n"].tolist() == [0, 0]


def test_the_sweep_summary_counts_done_failed_and_skipped_points(tmp_path):
    from datetime import datetime, timezone

    from experiments.sweep_summary import point_states, summary_line

    began = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    (tmp_path / ".hydra").mkdir()  # the sweep's own folder is no point
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]\n")
    points = {"now": ("completed", "2026-12-07T12:05:00+00:00"), "before": ("completed", "2026-12-07T11:00:00+00:00"),
              "broke": ("failed", "2026-12-07T12:06:00+00:00"), "unrecorded": None, "garbled": b"{"}
    for name, rec in points.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"[seed={len(name)}]\n")
        if isinstance(rec, tuple):
            write_point_record(tmp_path / name, *rec)
        elif rec is not None:
            (tmp_path / name / "result.json").write_bytes(rec)
    states = point_states(tmp_path, began)
    assert dict(states) == {"done": 1, "skipped": 1, "failed": 3}
    assert summary_line(tmp_path / "my sweep", states) == (
        "Sweep ended: 1 of 5 points done, 3 failed (or without a record), 1 skipped (completed before); report: "
        f"python -m analyze report '{tmp_path / 'my sweep'}'")


def write_point_record(folder, status, finished):
    from experiments.record import write_record

    config = {"stem": {"name": "resnet_7x7"}, "trunk": {}, "data": {}, "train": {}, "logger": {}, "profile": {}, "seed": 0}
    write_record(folder, {"name": "x", "config": config, "status": status, "finished": finished, "epochs_run": 1})


@pytest.mark.parametrize("content, reason", [
    (b"\x89PNG\r\n", "is not UTF-8 text (byte 0)"),
    (b"{", "is not JSON (Expecting property name enclosed in double quotes at line 1)"),
    (b'{"status": "completed"}', "is not a result record (no config)"),
])
def test_an_unreadable_record_is_named_and_its_point_re_run(tmp_path, caplog, content, reason):
    (tmp_path / "result.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="stemlab"):
        assert sweep_point.completed_result(tmp_path, {"stem": {"name": "resnet_7x7"}, "seed": 0}) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'result.json'}: {reason}; re-running this point and replacing it."]


def test_a_completed_record_with_the_same_config_is_reused(tmp_path):
    config = {"stem": {"name": "resnet_7x7", "kernel": (7, 7)}, "seed": 0, "train": {"clip": float("nan")},
              "logger": {"name": "wandb"}}
    write_record(tmp_path, {"config": {**config, "logger": {"name": "none"}}, "status": "completed",
                            "metrics": {"valid_acc": 0.5}})
    assert sweep_point.completed_result(tmp_path, config)["metrics"] == {"valid_acc": 0.5}  # tuple and NaN as stored
    assert sweep_point.completed_result(tmp_path, {**config, "seed": 1}) is None


@pytest.mark.slow
def test_joblib_sweep_shares_one_wandb_group(tmp_path):
    # an ad-hoc sweep (no study preset): its W&B group is its sweep directory
    args = ["-m", "hydra/launcher=parallel", *[a for a in TINY_SWEEP if a != "logger=none"], "logger=wandb",
            "hydra.sweep.dir=multirun/adhoc"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel" in proc.stdout + proc.stderr
    recs = records(tmp_path / "multirun" / "adhoc")
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    assert {r["config"]["logger"]["group"] for r in recs.values()} == {"adhoc"}
    assert {(r["config"]["stem"]["name"], r["config"]["seed"]) for r in recs.values()} == \
        {(s, i) for s in ("resnet_7x7", "patchify_4x4") for i in (0, 1)}
    assert len(list((tmp_path / "multirun" / "adhoc").glob("*/wandb/offline-run-*"))) == 4
    # joblib gives each of its n_jobs=2 workers cores // 2 threads (at least 1), and the record says so
    assert {r["hardware"]["threads"] for r in recs.values()} == {max(1, os.cpu_count() // 2)}


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    sweep = tmp_path / "study"
    proc = run_cli("-m", "+experiment=stem_study_mnist5k", "hydra/launcher=local_queue", *TINY_SWEEP,
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(sweep)
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # the points really ran as submitit jobs
    # its 4 points run at once, each with the launcher's cpus_per_task (1) threads, not the machine's every core
    assert {r["hardware"]["threads"] for r in recs.values()} == {1}


@pytest.fixture
def hydra_cfg():
    register_configs()

    def make(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)

    yield make
    GlobalHydra.instance().clear()


def test_imagenette_study_preset(hydra_cfg):
    cfg = hydra_cfg("+experiment=stem_study_imagenette")
    assert (cfg.trunk.name, cfg.data.name, cfg.data.size, cfg.data.image_size, cfg.train.epochs) == \
        ("xresnet50", "imagenette", 160, 128, 5)
    assert cfg.hydra.sweep.dir == "multirun/stem_study_imagenette" and cfg.logger.group == "stem_study_imagenette"
    # the zoo, read from the registry by Hydra's glob over the stem group (the design space's default point is
    # xresnet_3conv: left out), and 5 seeds
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params == {"stem": "glob(*,exclude=space)", "seed": "range(5)"}
    points, command = sweep_points({"sweeper": {"params": params},
                                           "overrides": {"task": ["+experiment=stem_study_imagenette"], "hydra": []}})
    assert sorted(points) == sorted((s, str(i)) for s in stems.available() if s != "space" for i in range(5))
    assert command == "python train.py -m +experiment=stem_study_imagenette"


@pytest.mark.slow
def test_imagenette_cpu_study_preset_runs_at_a_tiny_size(tmp_path):
    # the preset as committed (6 stems, xresnet18, Imagenette layout, per-layer timing on, LR tuned), on generated
    # images at 16 px (10 a class to train on, 1 to validate), one epoch, seed 0: every stem of it builds, tunes,
    # trains, times its layers and writes its record
    from tests.test_data import two_class_folder

    root, sweep = two_class_folder(tmp_path / "imagenette", 24), tmp_path / "study"
    for image in root.glob("train/*/a.JPEG"):  # 10 training images a class: enough to carve a tuning split from
        for copy in "bcdefghij":
            shutil.copy(image, image.with_name(f"{copy}.JPEG"))
    proc = run_cli("-m", "+experiment=stem_study_imagenette_cpu", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}",
                   "data.image_size=16", "data.workers=1", "train.bs=2", "train.epochs=1", "seed=0", "logger=none",
                   "profile.budget_s=0", f"hydra.sweep.dir={sweep}",
                   "hydra.sweeper.lrs=[0.004]", "hydra.sweeper.tune_seeds=[0]", "compare.seeds=fixed",  # seed 0 alone
                   timeout=900)  # tuned, at one LR: 6 + 6 runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(records(sweep / "tune")) == 6
    done = records(sweep / "final")
    assert sorted(r["config"]["stem"]["name"] for r in done.values()) == sorted(
        ["resnet_7x7", "xresnet_3conv", "resblock", "patchify_4x4", "space_to_depth", "dw_separable"])
    for r in done.values():
        assert r["status"] == "completed" and r["config"]["trunk"]["name"] == "xresnet18"
        assert r["config"]["data"]["name"] == "imagenette" and r["config"]["profile"]["latency"] is True
        assert r["metrics"]["ms_train_step"] > 0  # the layers were timed


def test_slurm_preset_becomes_an_sbatch_script(hydra_cfg, tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = hydra_cfg("+experiment=stem_study_imagenette", "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    # submitit refuses to build a SLURM executor without srun on the PATH: a stand-in (nothing is submitted)
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # the plugin's own mapping (BaseSubmititLauncher.launch): base keys as is, the rest prefixed with slurm_
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    for key in ("_target_", "submitit_folder", "max_num_timeout"):
        params.pop(key)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in params.items()} | {"name": "stemlab"}
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**params)
    sbatch = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("--partition=gpu", "--gpus-per-task=1", "--time=120", "--cpus-per-task=8", "--mem=32GB"):
        assert f"#SBATCH {line}" in sbatch
