"""Faults that lost work or lied (issue 26), each ending as the README promises: one sentence, a non-zero exit, a
record that says what happened, nothing finished lost. The data cache's full disk and dead or stuck workers are in
test_data_cache.py. A full disk is simulated at the write (ENOSPC raised where the bytes go), so no test needs root."""
from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.experimental.callback import Callback

import experiments
from analyze.report.data import read_records
from experiments import record, runner, sweep
from experiments.checkpoint import CHECKPOINT_DIR, NoTrainedModel, aside_dir, config_hash, find_resumable, load_trained_model
from experiments.config import ConfigError, check_command_line, to_dict
from experiments.data import DataError, build_data
from experiments.data.cache import _locked
from experiments.rundir import RunFolderGuard, lock_folder
from tests.conftest import ROOT, TINY, run_cli

# a trunk of one narrow block per stage: a run takes seconds, its checkpoint a few hundred kB
SMALL = ["trunk.layers=[1,1,1,1]", "trunk.widths=[8,8,8,8]", "stem.out_channels=8", "stem.widths=[8,8,8]"]


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / record.RESULT_FILE).read_text())


def fd_targets() -> list[str]:
    return [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")]


# --- 2. a full disk while a checkpoint is written --------------------------------------------------------------------

def torch_save_on_a_disk_full_at(name_part: str):
    """torch.save that fills the disk when writing a file whose name holds `name_part`."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if name_part not in getattr(f, "name", ""):
            return real_save(obj, f, *args, **kwargs)
        f.write(b"x" * 4096)  # what torch.save does on a full disk: part written, then its own error
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    return save


def test_a_full_disk_at_a_checkpoint_frees_its_file_and_leaves_a_record(make_cfg, tmp_path, monkeypatch):
    at_record = []

    def spy(out_dir, result, *args, **kwargs):  # what is open when the failed record is written
        at_record.append([t for t in fd_targets() if "epoch_" in t])
        return record.write_record(out_dir, result, *args, **kwargs)

    monkeypatch.setattr(torch, "save", torch_save_on_a_disk_full_at("epoch_2"))
    monkeypatch.setattr(runner, "write_record", spy)
    run_dir = tmp_path / "run"
    with pytest.raises(runner.RunFailed) as failed:
        experiments.run(make_cfg(*SMALL, "train.epochs=3"), run_dir)
    path = run_dir / CHECKPOINT_DIR / "epoch_2.pt"
    assert str(failed.value).startswith(f"the disk holding {run_dir} is full (no space left for a checkpoint of about ")
    assert str(failed.value).endswith(f"MiB: {path}); free space there or give the run a folder on another disk, then "
                                      f"re-run the command (it resumes from the last checkpoint); record: "
                                      f"{run_dir / 'result.json'}")
    assert at_record == [[]]  # the half-written checkpoint's file was closed and removed before the record
    rec = read(run_dir)
    assert (rec["status"], rec["stage"], rec["epochs_run"]) == ("failed", "write", 2)
    assert "No space left" in rec["traceback"] and "[Errno 28]" in rec["error"]
    assert sorted(p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()) == ["epoch_1.pt"]  # the finished epoch stays


def test_a_record_that_does_not_fit_is_written_small(tmp_path, monkeypatch):
    real = record.atomic_write

    def full_for_tables(path, content):
        if Path(path).suffix == ".csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, content)

    monkeypatch.setattr(record, "atomic_write", full_for_tables)
    config = {"stem": {"name": "resnet_7x7"}, "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"}, "seed": 0}
    layers = __import__("pandas").DataFrame({"name": ["stem"]})
    record.write_record(tmp_path, {"name": "r", "config": config, "status": "failed", "error": "OSError: full",
                                   "traceback": "x" * 100_000, "environment": {"python": "3"}}, layers)
    rec = record.read_record(tmp_path / record.RESULT_FILE)
    assert set(rec) == {"format", "name", "config", "status", "error", "incomplete"}
    assert rec["incomplete"] == ("the disk was full (No space left on device): the tables and the other fields were "
                                 "not written")
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*"))


# --- 3. a changed setting keeps the finished work aside --------------------------------------------------------------

@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_kept_aside_and_resumed_later(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    done, run_dir = tmp_path / "done", tmp_path / "run"
    original = make_cfg(*SMALL, "train.epochs=2", "train.keep_checkpoints=true")
    experiments.run(original, done)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)  # "interrupted after epoch 1"
    shutil.copy(done / CHECKPOINT_DIR / "epoch_1.pt", run_dir / CHECKPOINT_DIR)

    experiments.run(make_cfg(*SMALL, "train.epochs=2", "train.lr=0.005"), run_dir)  # a mistyped setting
    aside = run_dir / f"{CHECKPOINT_DIR}-{config_hash(to_dict(original))}"
    assert (f"it was written for a different config (train.lr: 0.004 -> 0.005); starting from epoch 1; it is kept in "
            f"{aside} (re-run with that config to resume from it)") in caplog.text
    assert [p.name for p in aside.iterdir()] == ["epoch_1.pt"]

    experiments.run(make_cfg(*SMALL, "train.epochs=2"), run_dir)  # the intended command again
    assert f"the checkpoints of this config kept in {aside} are back in {run_dir / CHECKPOINT_DIR}" in caplog.text
    assert "after epoch 1 of 2" in caplog.text and read(run_dir)["resumed_from_epoch"] == 1
    assert not aside.exists()


# --- 4. no value puts a folder outside the run's ----------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    (["seed=0,1", "logger.name=../../../ESC"], "logger.name=../../../ESC would put a sweep point's folder ("),
    (["seed=0,1", "stem.match=flops:../../../ESC6"], r"stem.match=flops\:../../../ESC6 would put a sweep point's folder"),
    (["seed=0,1", "hydra.sweep.subdir=../out"], "hydra.sweep.subdir=../out would put a sweep point's folder (../out)"),
])
def test_a_sweep_value_that_climbs_out_of_the_sweep_folder_is_refused(overrides, message):
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, *overrides], multirun=True)
    assert str(refused.value).startswith(message)
    assert str(refused.value).endswith("outside hydra.sweep.dir; use a value without '/' in it.")


@pytest.mark.parametrize("override,message", [
    ("stem.match=flops:nope", "stem.match=flops:nope: unknown stem 'nope'; choose one of: conv2_s2, "),
    ("stem.match=time:nope", "stem.match=time:nope: unknown stem 'nope'; choose one of: conv2_s2, "),
    ("stem.match=params:0", "stem.match=params:0: stem.match target must be positive, got 'params:0'."),
    ("logger.name=../ESC", "logger.name=../ESC differs from the chosen logger 'none'; choose another logger with "
                           "logger=NAME, not logger.name."),
])
def test_a_bad_match_target_or_logger_name_is_refused_before_the_run(override, message):
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, override])
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("args,key", [
    (["stem.match=flops:nope"], "stem.match=flops:nope"),
    (["-m", "seed=0,1", "logger.name=../../../ESC"], "logger.name=../../../ESC"),
    (["-m", "seed=0,1", "stem.match=flops:../../../ESC6"], "stem.match=flops"),
])
def test_the_cli_refuses_a_path_in_a_value_and_writes_nothing(tmp_path, args, key):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    flags, overrides = [a for a in args if a.startswith("-")], [a for a in args if not a.startswith("-")]
    proc = run_cli(*flags, *TINY, *overrides, f"hydra.run.dir={work / 'run'}", f"hydra.sweep.dir={work / 'sweep'}",
                   cwd=work)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {key}"), proc.stderr
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["a", "a/b", "a/b/c"]


LONG_LAYERS, LONG_WIDTHS = "[" + ",".join(["1"] * 60) + "]", "[" + ",".join(["8"] * 60) + "]"
LONG_STEM = {"widths": [16] * 29 + [64], "kernel_sizes": [1] * 30, "strides": [2, 2] + [1] * 28}


@pytest.mark.parametrize("mode", ["sweep", "run"])
def test_a_folder_name_too_long_for_the_filesystem_is_refused_and_writes_nothing(tmp_path, mode):
    """A sweep point's folder is named by its overrides, a single run's by its stem's non-default parameters: past the
    filesystem's 255 bytes per name Hydra would end in a traceback, leaving the sweep's folder half-written."""
    if mode == "sweep":
        overrides = ["data=synthetic", "stem=resnet_7x7", f"trunk.layers={LONG_LAYERS}", f"trunk.widths={LONG_WIDTHS}"]
        name = ",".join(overrides)  # Hydra's override_dirname: sorted, logger= left out
        what, fix = "a sweep point's folder name", ("shorten the overrides or move them into a preset in conf/experiment/, "
                                                    "or name the points by number: 'hydra.sweep.subdir=${hydra.job.num}'.")
        proc = run_cli("-m", *overrides, "logger=none", cwd=tmp_path)
    else:
        overrides = ["data=synthetic", "stem=conv_stack", *(f"stem.{k}={v}".replace(" ", "") for k, v in LONG_STEM.items())]
        label = "conv_stack" + "".join(f".{k}={','.join(map(str, LONG_STEM[k]))}" for k in sorted(LONG_STEM))
        name = f"HH-MM-SS_{label}_xresnet18_synthetic"  # hydra.run.dir's default: time, stem label, trunk, data
        what, fix = "the run's folder name", "set a shorter one with hydra.run.dir=FOLDER."
        proc = run_cli(*overrides, "logger=none", cwd=tmp_path)
    assert len(name) > 255
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {what} ("), proc.stderr
    assert proc.stderr.endswith(f"...) is {len(name)} bytes long, over the filesystem's limit of 255 bytes per name; "
                                f"{fix}\n"), proc.stderr
    assert list(tmp_path.iterdir()) == []  # no multirun/ nor outputs/ folder


def test_a_sweep_folder_too_long_for_the_filesystem_is_refused():
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, "seed=0,1", f"hydra.sweep.dir=multirun/{'s' * 256}"], multirun=True)
    assert str(refused.value) == (f"hydra.sweep.dir's folder name ({'s' * 57}...) is 256 bytes long, over the "
                                  "filesystem's limit of 255 bytes per name; use a shorter hydra.sweep.dir.")


# --- 5. non-finite settings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("train.lr=inf", "train.lr=inf is not a finite number; use a number > 0."),
    ("train.wd=inf", "train.wd=inf is not a finite number; use a number ≥ 0."),
    ("train.lr=nan", "train.lr=nan is not a finite number; use a number > 0."),
    ("profile.budget_s=inf", "profile.budget_s=inf is not a finite number; use a number ≥ 0, or null for no budget."),
])
def test_non_finite_settings_are_refused(override, message):
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, override])
    assert str(refused.value) == message


# --- 6. a valid JSON record with a wrong-typed field ------------------------------------------------------------------

def test_a_wrong_typed_record_is_named_and_rerun_skipped_or_refused(make_cfg, tmp_path, caplog):
    cfg = make_cfg(*SMALL)
    config = to_dict(cfg)
    good, bad = tmp_path / "sweep" / "good", tmp_path / "sweep" / "bad"
    experiments.run(cfg, good)
    rec = read(good)
    bad.mkdir()
    (bad / record.RESULT_FILE).write_text(json.dumps({**rec, "metrics": "oops"}))
    why = 'is not a valid result record (metrics is "oops", not an object)'

    assert sweep.completed_result(good, config) is not None
    assert sweep.completed_result(bad, config) is None  # the sweep re-runs the point, naming the record
    assert f"{bad / record.RESULT_FILE}: {why}; re-running this point and replacing it." in caplog.text
    inputs = read_records(tmp_path / "sweep")  # the report skips it, naming it
    assert [r.source for r in inputs.runs] == [str(good)] and inputs.skipped == [(str(bad / record.RESULT_FILE), why)]
    shutil.copy(good / "model.pt", bad)
    with pytest.raises(NoTrainedModel, match=rf"^{bad / record.RESULT_FILE}: is not a valid result record"):
        load_trained_model(bad)  # the checkpoint reader refuses it in one sentence
    assert sum(p.numel() for p in load_trained_model(good).parameters()) == rec["metrics"]["params"]


# --- 7. one writer per run folder, and a full disk at the start --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_second_writer_into_a_run_folder_is_refused(tmp_path, mode):
    folder = tmp_path / mode
    fd = lock_folder(folder, "hydra.run.dir")  # the first writer, still running
    try:
        flags, args = (["-m"], ["seed=0,1"]) if mode == "sweep" else ([], [])
        proc = run_cli(*flags, *TINY, *args, f"hydra.{mode}.dir={folder}", cwd=tmp_path)
    finally:
        os.close(fd)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {folder} is being written by another run (process {os.getpid()}); wait for it "
                           f"to end, or set hydra.{mode}.dir= to another folder.\n")
    assert [p.name for p in folder.iterdir()] == [".stemlab.lock"]  # nothing of the second writer's


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_a_finished_run_or_sweep_leaves_no_lock_file(tmp_path, key):
    from omegaconf import OmegaConf

    folder = tmp_path / "out"
    config = OmegaConf.create({"hydra": {"run": {"dir": str(folder)}, "sweep": {"dir": str(folder)}}})
    guard = RunFolderGuard()
    (guard.on_run_start if key == "hydra.run.dir" else guard.on_multirun_start)(config=config)  # as Hydra calls them
    (folder / "result.json").write_text("{}")  # what the run wrote
    assert (folder / ".stemlab.lock").exists()
    (guard.on_run_end if key == "hydra.run.dir" else guard.on_multirun_end)(config=config)
    assert [p.name for p in folder.iterdir()] == ["result.json"]
    os.close(lock_folder(folder, key))  # and the folder is free for the next writer


def test_a_full_disk_at_the_start_is_one_sentence(tmp_path, monkeypatch, capsys):
    from experiments import rundir

    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(40 << 20, 40 << 20, 4096))
    with pytest.raises(SystemExit) as stopped:
        RunFolderGuard().guard(tmp_path / "run", "hydra.run.dir")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (f"error: the disk holding {tmp_path / 'run'} is full (4 KiB free, a run needs 1 "
                                       "MiB to start); free space there or set hydra.run.dir= to a folder on another "
                                       "disk.\n")
    assert not (tmp_path / "run").exists()


# --- the minor cases ---------------------------------------------------------------------------------------------------

def test_a_zero_width_is_named_as_such():
    with pytest.raises(ConfigError) as refused:
        check_command_line([*TINY, "stem.widths=[0]"])
    assert str(refused.value) == ("stem 'xresnet_3conv' cannot be built with widths=[0], norm=bn, act=relu: widths "
                                  "must be positive integers, got [0].")


@pytest.mark.parametrize("dataset", ["mnist", "imagenette"])
def test_a_data_root_that_does_not_exist_is_not_created(make_cfg, tmp_path, dataset):
    root = tmp_path / "nonexistent"
    cfg = make_cfg(f"data={dataset}", f"data.root={root}", tiny=False).data
    with pytest.raises(DataError, match=rf"and data.root={root} does not exist \(it is not created for a download\); "):
        build_data(cfg, bs=2, seed=0)
    assert not root.exists()


# --- issue 35, 1: a killed cache build leaves no worker and no lock behind -----------------------------------------------

def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a parent (in a container PID 1 may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_decoding_workers_end_with_their_killed_parent(tmp_path):
    script = ("import multiprocessing as mp, os, sys, time; from concurrent.futures import ProcessPoolExecutor\n"
              "from pathlib import Path; from experiments.data import cache\n"
              "cache._allocate(Path(sys.argv[1]), 2 * 4 * 4 * 3)\n"
              "pool = ProcessPoolExecutor(2, mp_context=mp.get_context('fork'), initializer=cache._start_worker,\n"
              "                           initargs=(sys.argv[1], 2, 4, os.getpid()))\n"
              "for f in [pool.submit(time.sleep, 0.3) for _ in range(4)]: f.result()\n"
              "print(*pool._processes, flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "rows.u8")], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(map(running, workers))
    proc.kill()  # SIGKILL: the parent runs no clean-up
    proc.wait()
    try:
        assert wait_until(lambda: not any(map(running, workers)), 5.0)
    finally:
        for pid in filter(running, workers):
            os.kill(pid, signal.SIGKILL)


def test_a_lock_of_a_killed_process_whose_child_lives_on_is_taken_over(tmp_path, caplog):
    folder, cache_lock = tmp_path / "run", tmp_path / "test-train-16px-lock"
    script = ("import os, signal, sys, time; from pathlib import Path; from experiments import locks\n"
              "from experiments.rundir import lock_folder\n"
              "lock_folder(Path(sys.argv[1]), 'hydra.run.dir')\n"
              "fd = locks.open_lock(Path(sys.argv[2])); locks.acquire(fd, Path(sys.argv[2]))\n"
              "child = os.fork()\n"
              "if child == 0: time.sleep(60); os._exit(0)  # a worker forked while the locks are held, left running\n"
              "print(os.getpid(), child, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), str(cache_lock)], stdout=subprocess.PIPE, text=True)
    killed, orphan = map(int, proc.stdout.readline().split())
    proc.wait()
    try:
        assert running(orphan)
        caplog.set_level(logging.INFO, logger="stemlab")
        fd = lock_folder(folder, "hydra.run.dir")
        with _locked(cache_lock) as since:
            assert since is not None
        os.close(fd)
    finally:
        os.kill(orphan, signal.SIGKILL)
    for path in (folder / ".stemlab.lock", cache_lock):
        assert (f"{path} was held by process {killed}, which ended without releasing it; its lock is taken "
                "over.") in caplog.text
    assert "waiting for" not in caplog.text


# --- issue 35, 2: a single run into a running sweep point's folder --------------------------------------------------------

@pytest.mark.slow
def test_a_single_run_into_a_running_sweep_points_folder_is_refused(tmp_path):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    point = tmp_path / "sweep" / "seed=0"
    guard = RunFolderGuard()  # the sweep's process, while point 0 trains
    guard.on_job_start(OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(point)}}}))
    try:
        proc = run_cli(*TINY, "seed=0", f"hydra.run.dir='{point}'", cwd=tmp_path)
    finally:
        guard.on_job_end()
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {point} is being written by another run (process {os.getpid()}); wait for it to "
                           "end, or set hydra.run.dir= to another folder.\n")
    assert list(point.iterdir()) == []  # nothing of the refused run; the point's lock file went with its release


# --- issue 35, 3: the checkpoint of this config is resumed wherever it was kept ------------------------------------------

def test_a_kept_checkpoint_is_resumed_when_another_configs_checkpoint_is_current(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    default, other = to_dict(make_cfg(*SMALL, "train.epochs=3")), to_dict(make_cfg(*SMALL, "train.epochs=3", "train.lr=0.01"))
    run_dir = tmp_path / "run"

    def stopped_after_epoch_1(config: dict) -> None:  # what a run of `config` interrupted after epoch 1 leaves
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": 1, "n_epochs": 3, "config_hash": config_hash(config), "config": json.dumps(config)},
                   run_dir / CHECKPOINT_DIR / "epoch_1.pt")

    stopped_after_epoch_1(default)
    assert find_resumable(run_dir, other, "lr 0.01") is None  # sets the default's aside
    stopped_after_epoch_1(other)
    state = find_resumable(run_dir, default, "default")  # the default LR again
    assert (state["config_hash"], state["epoch"]) == (config_hash(default), 1)
    assert f"resuming default after epoch 1 of 3 ({run_dir / CHECKPOINT_DIR / 'epoch_1.pt'})" in caplog.text
    others = aside_dir(run_dir, config_hash(other))  # the 0.01 run's epoch is kept in turn
    assert torch.load(others / "epoch_1.pt")["config_hash"] == config_hash(other)
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT_DIR, others.name]


# --- issue 35, 5: damaged user caches are named, set aside and measured again ---------------------------------------------

def damage_the_entry(path: Path, damage) -> str:
    """Replace the one entry of the JSON cache at `path` by damage(entry); its key."""
    (key, entry), = json.loads(path.read_text()).items()
    path.write_text(json.dumps({key: damage(entry)}))
    return key


@pytest.mark.parametrize("damage,why", [
    (lambda e: {**e, "flops_per_s": 0}, "flops_per_s is 0, not a positive finite number"),
    (lambda e: {**e, "flops_per_s": -1e9}, "flops_per_s is -1000000000.0, not a positive finite number"),
    (lambda e: {**e, "bytes_per_s": "fast"}, 'bytes_per_s is "fast", not a positive finite number'),
    (lambda e: {"oops": 1}, "flops_per_s is missing"),
    (lambda e: [e], "a JSON list, not an object"),
])
def test_a_damaged_calibration_entry_is_named_and_measured_again(tmp_path, monkeypatch, caplog, damage, why):
    from profiler import calibrate

    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibrate, "measure_flops", lambda dev, dtype: 2e9)
    monkeypatch.setattr(calibrate, "measure_bandwidth", lambda dev: 3e9)
    calibrate.peaks("cpu")
    key = damage_the_entry(tmp_path / "calibration.json", damage)
    monkeypatch.setattr(calibrate, "measure_flops", lambda dev, dtype: 4e9)  # measured again now
    peak = calibrate.peaks("cpu")
    assert (peak.flops_per_s, peak.bytes_per_s) == (4e9, 3e9)
    assert caplog.messages == [f"{tmp_path / 'calibration.json'}: the entry {key!r} is damaged ({why}); it is "
                               "measured again."]
    assert json.loads((tmp_path / "calibration.json").read_text())[key]["flops_per_s"] == 4e9


@pytest.mark.parametrize("name", ["calibration.json", "cpu_formats.json"])
@pytest.mark.parametrize("text,why", [("{not json", "JSONDecodeError: "), ("[1, 2]", "ValueError: a JSON list, not an object")])
def test_a_cache_file_that_is_not_a_json_object_is_set_aside_with_a_warning(tmp_path, monkeypatch, caplog, name, text, why):
    from profiler import calibrate

    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    (tmp_path / name).write_text(text)
    assert calibrate.cached(name, "k", lambda: {"x": 1.5}, lambda e: calibrate.damaged_fields(e, ["x"])) == {"x": 1.5}
    [message] = caplog.messages
    assert message.startswith(f"{tmp_path / name} is damaged ({why}")
    assert message.endswith(f"); it is set aside as {tmp_path / name}.damaged and measured again.")
    assert (tmp_path / f"{name}.damaged").read_text() == text
    assert json.loads((tmp_path / name).read_text()) == {"k": {"x": 1.5}}


@pytest.mark.parametrize("damage,why", [
    (lambda e: {k: str(v) for k, v in e.items()}, 'fp32 is "100.0", not a positive finite number'),
    (lambda e: {"load": e["load"]}, "fp32 is missing"),
])
def test_a_damaged_cpu_format_entry_is_probed_again(tmp_path, monkeypatch, caplog, damage, why):
    from experiments import cpu_format
    from experiments.cpu_format import Format, capabilities, resolve_cpu_format

    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    fp32, fp32_cl = Format("fp32", False), Format("fp32", True)
    monkeypatch.setattr(cpu_format, "probe", lambda model, shape, formats: {fp32: 100.0, fp32_cl: 50.0})
    workload = lambda: (torch.nn.Conv2d(3, 4, 3), (2, 3, 8, 8))  # noqa: E731
    resolve_cpu_format("fp32", "auto", workload, capabilities(set()))
    key = damage_the_entry(tmp_path / "cpu_formats.json", damage)
    chosen, decided = resolve_cpu_format("fp32", "auto", workload, capabilities(set()))
    assert chosen == fp32_cl and decided["probe_ms"] == {"fp32": 100.0, "fp32, channels_last": 50.0}
    assert [m for m in caplog.messages if "is damaged (" in m] == [
        f"{tmp_path / 'cpu_formats.json'}: the entry {key!r} is damaged ({why}); it is measured again."]


def test_a_peak_measured_as_zero_is_never_used(tmp_path, monkeypatch):
    from profiler import calibrate

    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibrate, "measure_flops", lambda dev, dtype: 0.0)
    monkeypatch.setattr(calibrate, "measure_bandwidth", lambda dev: 3e9)
    with pytest.raises(calibrate.MeasurementFailed, match=r"\(flops_per_s is 0.0, not a positive finite number\); run "
                                                          r"the command again\.$"):
        calibrate.peaks("cpu")
    assert not (tmp_path / "calibration.json").exists()


# --- issue 35, 6: a stop signal between two sweep points names the sweep to resume ------------------------------------

class StopAfterFirstPoint(Callback):
    """SIGTERM to the sweep's own process once a point has ended, before the next one starts."""

    def on_job_end(self, **kwargs) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_between_two_sweep_points_prints_the_resume_command(tmp_path):
    stopper = "+hydra.callbacks.stop._target_=tests.test_faults.StopAfterFirstPoint"
    proc = run_cli("-m", *TINY, *SMALL, "seed=0,1", stopper, cwd=tmp_path)
    [sweep_dir] = (tmp_path / "multirun").glob("*/*")  # a timestamped folder: the line must name it
    output = proc.stdout + proc.stderr
    assert proc.returncode == 143
    assert (f"interrupted by SIGTERM between two points (every finished point's record is kept); resume with: python "
            f"{ROOT / 'train.py'} -m ") in output
    [line] = [line for line in output.splitlines() if "interrupted by" in line]
    assert line.endswith(f"seed=0,1 {stopper} hydra.sweep.dir={sweep_dir.relative_to(tmp_path)}")
    [point] = sweep_dir.glob("*seed=0*")
    assert read(point)["status"] == "completed" and not list(sweep_dir.glob("*seed=1*"))


# --- issue 35, 7: the final weights that do not fit are recorded as a full disk -------------------------------------------

def test_weights_that_do_not_fit_after_a_checkpoint_that_did_are_recorded_as_no_space(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", torch_save_on_a_disk_full_at("model.pt"))
    run_dir = tmp_path / "run"
    with pytest.raises(runner.RunFailed, match=rf"^the disk holding {run_dir} is full \(no space left for the model's "
                                               rf"weights of about 0 MiB: {run_dir / 'model.pt'}\); "):
        experiments.run(make_cfg(*SMALL, "train.save_model=true"), run_dir)
    rec = read(run_dir)
    assert (rec["status"], rec["stage"], rec["epochs_run"]) == ("failed", "write", 1)
    assert rec["error"].startswith("OSError: [Errno 28] no space left for the model's weights of about ")
    assert "enforce fail" not in rec["error"]
    assert [p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()] == ["epoch_1.pt"]  # the re-run resumes from it
    assert not list(run_dir.glob("*model.pt*"))


# --- issue 35, 7: a damaged or stale stems/manifest.json, --help included -----------------------------------------------

def train_py_with_manifest(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    """`python train.py ARGS` reading the manifest `text` in place of stems/manifest.json."""
    (tmp_path / "manifest.json").write_text(text)
    script = ("import runpy, sys; from pathlib import Path; from stems import manifest\n"
              "manifest.PATH = Path(sys.argv[1]); sys.argv = [sys.argv[2], *sys.argv[3:]]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", script, str(tmp_path / "manifest.json"), str(ROOT / "train.py"), *args],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args", [["--help"], [*TINY, "hydra.run.dir=run"]])
def test_a_manifest_that_is_a_json_list_is_one_sentence(tmp_path, args):
    proc = train_py_with_manifest(tmp_path, "[1, 2]", *args)
    assert (proc.returncode, proc.stderr) == (2, f"error: {tmp_path / 'manifest.json'} is not a stem manifest (a JSON "
                                                 "list, not an object of stems); regenerate it with `python -m stems "
                                                 "generate`.\n")
    assert not (tmp_path / "run").exists()


def test_a_stale_manifest_under_help_is_one_sentence(tmp_path):
    from stems import manifest

    entries = manifest.load()
    del entries["xresnet_3conv"]  # the default stem
    proc = train_py_with_manifest(tmp_path, manifest.render(entries), "--help")
    assert (proc.returncode, proc.stderr) == (2, "error: stem 'xresnet_3conv' is missing in manifest.json, the "
                                                 "registry's torch-free manifest; regenerate it with `python -m stems "
                                                 "generate`.\n")


def test_a_run_refused_in_its_setup_leaves_no_run_folder(tmp_path):
    proc = run_cli("logger=none", "data=imagenette", f"data.root={tmp_path / 'nonexistent'}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]
    assert f"and data.root={tmp_path / 'nonexistent'} does not exist (it is not created for a download); " in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- issue 35, 4: the disk filling up during a sweep --------------------------------------------------------------------

class FillTheDiskAfterFirstPoint(Callback):
    """Once a point has ended, the disk is full: no room left, and Hydra's save of the next point's config fails."""

    def on_job_end(self, **kwargs) -> None:
        import builtins

        from experiments import rundir

        rundir.shutil.disk_usage = lambda path: shutil._ntuple_diskusage(40 << 20, 40 << 20, 4096)
        real_open = builtins.open

        def full_for_yaml(file, mode="r", *args, **kw):
            if "w" in mode and str(file).endswith(".yaml"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_open(file, mode, *args, **kw)
        builtins.open = full_for_yaml


@pytest.mark.slow
def test_a_disk_that_fills_during_a_sweep_stops_it_in_one_sentence_with_a_failed_record(tmp_path):
    filler, sweep_dir = "+hydra.callbacks.fill._target_=tests.test_faults.FillTheDiskAfterFirstPoint", tmp_path / "sweep"
    proc = run_cli("-m", *TINY, *SMALL, "seed=0,1,2", filler, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    [done], [full] = sweep_dir.glob("*seed=0*"), sweep_dir.glob("*seed=1*")
    [line] = [line for line in output.splitlines() if "error:" in line]
    assert line.endswith(f"error: the disk holding {full} is full (4 KiB free, a run needs 1 MiB to start); free space "
                         f"there or set hydra.sweep.dir= to a folder on another disk; the sweep stops at this point "
                         f"(record: {full / 'result.json'}); resume it with: python {ROOT / 'train.py'} -m "
                         f"{' '.join(shlex.quote(a) for a in [*TINY, *SMALL])} seed=0,1,2 {filler} "
                         f"hydra.sweep.dir={sweep_dir}")
    assert f"{full / '.hydra' / 'config.yaml'} was not saved: No space left on device." in output
    assert read(done)["status"] == "completed"
    assert (read(full)["status"], read(full)["stage"]) == ("failed", "setup")
    assert not list(sweep_dir.glob("*seed=2*"))


@pytest.mark.parametrize("kept_in", ["point", "sweep"])  # a point that started on a full disk uses the sweep's room
def test_a_record_on_a_disk_filled_by_another_process_fits_in_the_room_kept_for_it(tmp_path, monkeypatch, kept_in):
    from experiments.rundir import RESERVE, RESERVE_FILE, keep_reserve

    point = tmp_path / "sweep" / "seed=0"
    point.mkdir(parents=True)
    keep_reserve(point if kept_in == "point" else point.parent)
    reserve = (point if kept_in == "point" else point.parent) / RESERVE_FILE
    assert reserve.stat().st_blocks * 512 >= RESERVE  # allocated, not a sparse promise
    real = record.atomic_write

    def full_until_the_reserve_is_freed(path, content):
        if reserve.exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, content)

    monkeypatch.setattr(record, "atomic_write", full_until_the_reserve_is_freed)
    config = {"stem": {"name": "resnet_7x7"}, "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"}, "seed": 0}
    record.write_record(point, {"name": "r", "config": config, "status": "failed", "stage": "write",
                                "error": "OSError: [Errno 28] No space left on device", "traceback": "x" * 10_000})
    rec = read(point)
    assert (rec["status"], rec["stage"]) == ("failed", "write") and "traceback" not in rec
    assert not reserve.exists()
