"""One run end to end: the result record, the CLI's exits on bad input, multirun, W&B offline and failing."""
import json
import math
import os
import platform

import pandas as pd
import pytest

import experiments
from experiments import record
from experiments.allocator import KEPT
from tests.conftest import TINY, run_cli


@pytest.mark.slow
def test_tiny_run_writes_a_complete_record(make_cfg, tmp_path):
    # the default profile: every layer timed on the training device (the fewest timed steps, to stay quick)
    acc = experiments.run(make_cfg("stem=resnet_7x7", "profile.latency=true", "profile.budget_s=0"), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["format"] == record.RECORD_FORMAT
    assert result["config"]["stem"]["name"] == "resnet_7x7" and result["metrics"]["valid_acc"] == pytest.approx(acc)
    assert 0 <= acc <= 1 and result["metrics"]["train_img_s"] > 0
    assert 0 < result["metrics"]["stem_share_flops"] < 1 and result["metrics"]["params"] > 1e6
    assert {"torch", "fastai", "hydra", "python"} <= set(result["environment"])
    if platform.libc_ver()[0] == "glibc" and not {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "STEMLAB_KEEP_FREED_MEMORY"} & set(os.environ):
        assert result["hardware"]["allocator"] == KEPT  # a CPU run keeps freed memory, and says so
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [1] and {"train_loss", "valid_loss", "accuracy", "train_img_s"} <= set(history.columns)
    # the training's own step time: its epoch's seconds over its 32 // 8 = 4 steps (the report's ms / step)
    assert result["metrics"]["train_ms_step"] == pytest.approx(1000 * history["train_s"].iloc[0] / 4)
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert layers["group"].iloc[0] == "stem" and layers["flops_fwd"].sum() > 0
    metrics = result["metrics"]
    assert 0 < metrics["stem_share_time"] < 1 and metrics["ms_fwd"] > 0 and metrics["ms_train_step"] > 0
    assert layers["ms_fwd"].notna().all() and layers["ms_bwd"].notna().all()
    assert (tmp_path / "shares.png").stat().st_size > 0 and (tmp_path / "roofline.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files behind


@pytest.mark.slow
def test_divergence_is_recorded_not_crashed(make_cfg, tmp_path):
    acc = experiments.run(make_cfg("train.lr=1e12"), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert math.isnan(acc) and result["status"] == "diverged"


def test_an_error_during_training_leaves_a_failed_record(make_cfg, tmp_path, monkeypatch):
    from experiments import runner

    def broken_fit(learn, *args):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(runner, "fit", broken_fit)
    with pytest.raises(experiments.RunFailed, match=r"training failed \(RuntimeError: CUDA error"):
        experiments.run(make_cfg(), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert "broken_fit" in result["traceback"] and result["name"] == "xresnet_3conv-xresnet18-synthetic-s0"


@pytest.mark.slow
def test_wandb_failing_to_start_leaves_the_local_record(make_cfg, tmp_path, monkeypatch, caplog):
    import wandb

    monkeypatch.setattr(wandb, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no network")))
    experiments.run(make_cfg("logger=wandb"), tmp_path)
    assert "W&B could not start (RuntimeError: no network)" in caplog.text
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_wandb_online_without_login_warns_and_keeps_the_record(make_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no stored W&B key
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    experiments.run(make_cfg("logger=wandb", "logger.mode=online"), tmp_path / "run")
    assert "W&B could not start (UsageError: No API key configured" in caplog.text
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_cli_run_logs_to_wandb_offline(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*TINY[:-1], "logger=wandb", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "completed | valid acc" in proc.stderr + proc.stdout and "Training on the CPU (" in proc.stderr + proc.stdout
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    assert (out / "model.pt").is_file()  # a single run keeps its weights by default
    run_dir, = (out / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("files/media/images/shares_*.png")) and list(run_dir.glob("files/media/table/layers_*.json"))


@pytest.mark.parametrize("args,message", [
    (["stem=nope"], "error: unknown stem 'nope'; choose one of:"),
    (["stem.widht=3"], "error: stem 'xresnet_3conv' has no parameter 'widht'"),
    (["stem.widths=[24,32,48]"], "end in 48, but the last width is the output width"),
    pytest.param(["train.device=cuda"], "train.device=cuda but no CUDA GPU is visible", marks=pytest.mark.cuda),
])
def test_cli_bad_input_is_one_sentence_and_nonzero(tmp_path, args, message):
    proc = run_cli(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr + proc.stdout and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_multirun_over_stems_resumes_in_any_order(tmp_path):
    proc = run_cli("-m", *TINY, "stem=resnet_7x7,patchify_4x4", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # each point's directory is its overrides, sorted, without the logger choice (hydra.job.override_dirname)
    shared = "data.image_size=16,data.n_train=32,data.n_valid=16,data=synthetic,profile.latency=False,{},train.bs=8,train.channels_last=False,train.epochs=1,train.precision=fp32"
    records = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")}
    assert {k: r["config"]["stem"]["name"] for k, r in records.items()} == \
        {shared.format("stem=resnet_7x7"): "resnet_7x7", shared.format("stem=patchify_4x4"): "patchify_4x4"}
    # a sweep point keeps no weights unless train.save_model=true (a study would fill the disk); the record says so
    assert all(r["config"]["train"]["save_model"] is False for r in records.values())
    assert not list(tmp_path.glob("*/model.pt"))
    # the same sweep with its values in the other order finds both points done
    proc = run_cli("-m", *TINY, "stem=patchify_4x4,resnet_7x7", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (proc.stdout + proc.stderr).count("already completed") == 2


@pytest.mark.slow
def test_a_single_run_folder_names_the_non_default_stem_parameters(tmp_path):
    proc = run_cli(*TINY, "stem.act=silu", "stem.widths=[16,32,64]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder, = (tmp_path / "outputs").glob("*/*")
    assert folder.name.endswith("_xresnet_3conv.act=silu.widths=16,32,64_xresnet18_synthetic")
    assert "epoch 1 " in proc.stdout + proc.stderr  # the epoch line counts from 1, as history.csv, W&B and epoch_N.pt


def test_stem_label_keeps_a_default_stem_plain(make_cfg):
    from experiments.schema import stem_label

    assert stem_label(make_cfg().stem) == "xresnet_3conv"
    assert stem_label(make_cfg("stem=resnet_7x7", "stem.out_channels=96").stem) == "resnet_7x7.out_channels=96"


@pytest.mark.slow
def test_hydra_shell_completion_installs_and_answers(tmp_path):
    proc = run_cli("-sc", "install=bash", cwd=tmp_path)
    assert proc.returncode == 0 and "hydra_bash_completion()" in proc.stdout, proc.stderr[-2000:]
    proc = run_cli("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": "python train.py stem=resnet_7"})
    assert proc.stdout.split() == ["stem=resnet_7x7", "stem=resnet_7x7_nopool"]


def test_a_point_completed_when_sweeps_kept_weights_still_counts_as_completed(tmp_path):
    from experiments import sweep

    config = {"stem": {"name": "resnet_7x7"}, "seed": 0, "train": {"lr": 0.004, "save_model": False, "keep_checkpoints": False},
              "logger": {"name": "none"}}
    older = {**config, "train": {**config["train"], "save_model": True}}  # written before sweeps stopped keeping model.pt
    record.write_record(tmp_path, {"name": "x", "config": older, "status": "completed", "metrics": {"valid_acc": 0.5}})
    assert sweep.completed_result(tmp_path, config) is not None
    assert sweep.completed_result(tmp_path, {**config, "train": {**config["train"], "lr": 0.001}}) is None
