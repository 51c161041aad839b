"""Checkpoints, resume and interruption: a resumed run ends where an uninterrupted one does; a stop signal leaves
an `interrupted` record and its checkpoint, and the same command resumes from it."""
import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import experiments
from experiments.checkpoint import CHECKPOINT_DIR, WEIGHTS, load_trained_model
from experiments.fit import EpochHistory
from tests.conftest import ROOT, TINY

TIMINGS = list(EpochHistory.timings)


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns=TIMINGS)


def record(run_dir):
    return json.loads((run_dir / "result.json").read_text())


@pytest.mark.slow
def test_resumed_run_ends_exactly_where_an_uninterrupted_run_does(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    cfg = make_cfg("train.epochs=2", "train.keep_checkpoints=true")
    experiments.run(cfg, full)
    assert sorted(p.name for p in (full / CHECKPOINT_DIR).iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
    # "interrupted after epoch 1": a run directory holding only the first epoch's checkpoint
    (resumed / CHECKPOINT_DIR).mkdir(parents=True)
    shutil.copy(full / CHECKPOINT_DIR / "epoch_1.pt", resumed / CHECKPOINT_DIR)
    caplog.clear()  # the resumed run's log alone
    experiments.run(make_cfg("train.epochs=2"), resumed)

    assert "resuming xresnet_3conv-xresnet18-synthetic-s0 after epoch 1 of 2" in caplog.text
    assert caplog.text.index("resuming") < caplog.text.index("Profiling the model")  # said first, before minutes pass
    # CPU training is deterministic and every state is restored: equal to the last bit, not within a tolerance
    pd.testing.assert_frame_equal(history(resumed), history(full), check_exact=True)
    assert list(history(resumed)["epoch"]) == [1, 2]  # 1-based, as the log, W&B and epoch_N.pt
    assert record(resumed)["metrics"]["valid_loss"] == record(full)["metrics"]["valid_loss"]
    assert (record(resumed)["resumed_from_epoch"], record(resumed)["resumed_epochs"]) == (1, [1])
    assert (record(full)["resumed_from_epoch"], record(full)["resumed_epochs"]) == (None, [])
    weights = [torch.load(d / WEIGHTS, weights_only=True) for d in (full, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not (resumed / CHECKPOINT_DIR).exists()  # a completed run drops its checkpoints unless told to keep them


def test_model_pt_rebuilds_from_the_record(make_cfg, tmp_path):
    experiments.run(make_cfg("stem=patchify_4x4", "train.keep_checkpoints=true"), tmp_path)
    model = load_trained_model(tmp_path).eval()
    assert type(model.stem[0]).__name__ == "Conv2d" and model.stem[0].kernel_size == (4, 4)
    saved = torch.load(tmp_path / CHECKPOINT_DIR / "epoch_1.pt", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_no_weights_when_told_not_to_save_them(make_cfg, tmp_path):
    experiments.run(make_cfg("train.save_model=false"), tmp_path)
    assert not (tmp_path / WEIGHTS).exists() and record(tmp_path)["model"]["weights"] is None
    assert not (tmp_path / CHECKPOINT_DIR).exists()


@pytest.mark.slow
def test_checkpoint_of_another_config_is_not_used(make_cfg, tmp_path, caplog):
    experiments.run(make_cfg("train.epochs=2", "train.keep_checkpoints=true"), tmp_path / "a")
    (tmp_path / "b" / CHECKPOINT_DIR).mkdir(parents=True)
    shutil.copy(tmp_path / "a" / CHECKPOINT_DIR / "epoch_1.pt", tmp_path / "b" / CHECKPOINT_DIR)
    experiments.run(make_cfg("train.epochs=2", "train.lr=0.001"), tmp_path / "b")
    assert "it was written for a different config (train.lr: 0.004 -> 0.001); starting from epoch 1" in caplog.text
    assert record(tmp_path / "b")["resumed_from_epoch"] is None and len(history(tmp_path / "b")) == 2


SIGNAL_ARGS = [*TINY, "train.epochs=4"]


def start_run(run_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *SIGNAL_ARGS, f"hydra.run.dir={run_dir}"],
                            cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def interrupt_after_first_epoch(run_dir, signum) -> tuple[int, str]:
    proc = start_run(run_dir)
    deadline = time.monotonic() + 240
    while not list((run_dir / CHECKPOINT_DIR).glob("epoch_*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_stop_signal_leaves_an_interrupted_record_and_a_checkpoint(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    returncode, out = interrupt_after_first_epoch(run_dir, signum)
    assert returncode == code, out[-3000:]
    assert "Traceback" not in out
    rec = record(run_dir)
    n = rec["epochs_run"]
    assert rec["status"] == "interrupted" and 1 <= n < 4 and len(history(run_dir)) == n
    assert [p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()] == [f"epoch_{n}.pt"]
    assert f"interrupted by {signal.Signals(signum).name} after epoch {n} of 4 (the partial epoch is lost)" in out
    # the command that resumes it names its folder (a single run's default folder is a new timestamp)
    assert f"resume with: python {ROOT / 'train.py'} {' '.join(SIGNAL_ARGS)} hydra.run.dir={run_dir}" in out


@pytest.mark.slow
def test_the_same_command_resumes_an_interrupted_run(tmp_path):
    run_dir = tmp_path / "run"
    interrupt_after_first_epoch(run_dir, signal.SIGTERM)
    n = record(run_dir)["epochs_run"]
    proc = start_run(run_dir)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert f"resuming xresnet_3conv-xresnet18-synthetic-s0 after epoch {n} of 4" in out
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["resumed_from_epoch"] == n and rec["resumed_epochs"] == list(range(1, n + 1))
    assert list(history(run_dir)["epoch"]) == [1, 2, 3, 4]
