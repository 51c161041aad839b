"""benchmarks/gpu_run.sh, the one GPU run: its dry run on the CPU (every step at a toy size, what needs CUDA skipped
and said so, the output within the device tool's limits), its refusals, its budget, the OOM rule of its speed step
and the study preset it runs."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import tarfile

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from analyze.report.data import sweep_points
from experiments.config import CONF_DIR, register_configs
from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_run.sh"
STEPS = ["wheels", "pack", "versions", "cuda_tests", "train_default", "train_imagenette", "speed",
         "profile_xresnet_3conv", "profile_resnet_7x7", "profile_patchify_4x4", "shapes", "study", "report"]
GPU_ONLY = {"wheels", "cuda_tests"}  # the GPU machine's wheels, and the tests that need CUDA
OUTPUTS = ["gpu_run.log", "gpu_run.tar.gz", "steps.tsv", "summary.md"]
DEVICE_LIMITS = {"files": 8, "file_bytes": 16 << 20, "command_chars": 2000, "carry": 8, "timeout_s": 600}


def gpu_run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def steps(out) -> dict[str, tuple[str, str]]:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [r[0] for r in rows] == STEPS  # every step, in the order
    return {r[0]: (r[1], r[3]) for r in rows}


@pytest.mark.slow
def test_the_dry_run_runs_every_step_on_the_cpu_and_packs_what_they_wrote(tmp_path):
    out = tmp_path / "out"
    # a budget that a loaded CPU cannot spend: every step runs, none is cut for time
    proc = gpu_run("--dry-run", "--budget-s", "3000", str(out), timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # within the device tool's 8 files, none in a folder
    assert all(p.stat().st_size < DEVICE_LIMITS["file_bytes"] for p in out.iterdir())
    status = steps(out)
    assert {name for name, (st, _) in status.items() if st == "skipped"} == GPU_ONLY
    assert all(st == "ran" for name, (st, _) in status.items() if name not in GPU_ONLY)
    assert all(note for name, (_, note) in status.items() if name in GPU_ONLY)  # each skip says why
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in STEPS)
    assert f"Command: `bash benchmarks/gpu_run.sh --dry-run --budget-s 3000 {out}`" in summary

    with tarfile.open(out / "gpu_run.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    work = tmp_path / "gpu_run"
    for path in ["versions.json", "summary.md", "steps.tsv", "train_default/result.json",
                 "train_imagenette/result.json", "speed/speed.csv", "speed/speed.md", "shapes/shapes.csv",
                 "report/report.md", *(f"profile/{s}/layers.csv" for s in ("xresnet_3conv", "resnet_7x7", "patchify_4x4"))]:
        assert (work / path).is_file(), path
    assert json.loads((work / "versions.json").read_text())["missing"] == []
    records = [json.loads(p.read_text()) for p in (work / "study").glob("**/result.json")]
    assert sorted((r["config"]["stem"]["name"], r["config"]["seed"], r["status"]) for r in records) == \
        [(s, seed, "completed") for s in ("resnet_7x7", "xresnet_3conv") for seed in (0, 1)]
    for row in csv.DictReader((work / "speed" / "speed.csv").open()):
        # MFU by hand: training FLOPs per image x img/s over the peak; the ratio: stemlab over plain
        stemlab, plain = float(row["stemlab_img_s"]), float(row["plain_img_s"])
        assert float(row["ratio"]) == pytest.approx(stemlab / plain)
        assert float(row["mfu_stemlab"]) == pytest.approx(
            float(row["gflops_train_per_image"]) * 1e9 * stemlab / (float(row["peak_tflops"]) * 1e12))


@pytest.mark.slow
def test_a_spent_budget_and_items_left_out_skip_their_steps_and_say_so(tmp_path):
    proc = gpu_run("--dry-run", "--budget-s", "0", "--items", "2", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = steps(tmp_path)
    assert {st for st, _ in status.values()} == {"skipped"}
    assert status["speed"][1] == "the run's budget of 0 s was spent before it"
    assert status["train_default"][1] == "item 1 is not in --items 2"
    assert "| study | skipped |" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    ([], "gpu_run.sh: no output folder; pass one (OUTDIR) or set OUT."),
    (["--fast", "x"], "gpu_run.sh: unknown option --fast; use --dry-run, --pack, --wheels, --budget-s or --items."),
    (["--budget-s", "9m", "x"], "gpu_run.sh: --budget-s 9m is not a whole number of seconds."),
    (["--items", "2,6", "x"], "gpu_run.sh: --items 2,6 is not a list of the items 1 to 5 like 1,2,3."),
    (["x", "--pack"], "gpu_run.sh: --pack needs a value; see the header of benchmarks/gpu_run.sh."),
])
def test_bad_arguments_are_one_sentence_and_exit_2(args, message, tmp_path):
    proc = gpu_run(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert (proc.returncode, proc.stderr.strip(), proc.stdout) == (2, message, "")


def test_the_run_commands_in_the_header_fit_the_device_tool():
    header = SCRIPT.read_text()
    default_budget = int(re.search(r"budget=\$\{budget:-(\d+)\} device=cuda", header).group(1))
    calls = re.findall(r'^#\s+run\(command="(.+?)", carry=(.+?), timeout_s=(\d+)\)$', header, re.M)
    assert len(calls) == 3  # the one call, and the two calls of the whole study
    for command, _, timeout_s in calls:
        budget = re.search(r"--budget-s (\d+)", command)
        # the script stops itself before the tool would kill it, with time for a step's kill grace (15 s), the
        # summary and the archive: they still come back
        assert int(timeout_s) <= DEVICE_LIMITS["timeout_s"]
        assert (int(budget.group(1)) if budget else default_budget) <= int(timeout_s) - 45
        assert len(command) <= DEVICE_LIMITS["command_chars"]
    carry = json.loads(calls[0][1])
    # the carried folders are the ones the script reads by default, and the header's exclude line ignores them
    assert len(carry) <= DEVICE_LIMITS["carry"] and all(f"/{path}/" in header for path in carry)


def test_the_speed_step_halves_a_batch_that_runs_out_of_memory():
    spec = importlib.util.spec_from_file_location("gpu_speed", ROOT / "benchmarks" / "gpu_speed.py")
    gpu_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_speed)
    tried = []

    def measure(bs):  # a device that holds 48 images at most
        tried.append(bs)
        if bs > 48:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 10.0 * bs, 11.0 * bs

    assert gpu_speed.largest_fit(measure, 256, "GPU X") == (
        32, (320.0, 352.0), "train.bs=256 runs out of memory on GPU X; the largest batch that fits (halving) is 32.")
    assert tried == [256, 128, 64, 32]
    assert gpu_speed.largest_fit(measure, 16, "GPU X") == (16, (160.0, 176.0), "")


def test_the_gpu_study_preset_is_six_stems_by_two_seeds_reference_first():
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["+experiment=stem_study_imagenette128_gpu"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert (cfg.trunk.name, cfg.data.name, cfg.data.image_size, cfg.train.epochs, cfg.train.device) == \
        ("xresnet50", "imagenette", 128, 5, "cuda")
    assert cfg.hydra.sweep.dir == "multirun/stem_study_imagenette128_gpu" and cfg.hydra.launcher.n_jobs == 4
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    points, _ = sweep_points({"sweeper": {"params": params},
                              "overrides": {"task": ["+experiment=stem_study_imagenette128_gpu"], "hydra": []}})
    stems = list(dict.fromkeys(s for s, _ in points))
    assert len(stems) >= 6 and sorted({seed for _, seed in points}) == ["0", "1"]
    assert len(points) == len(stems) * 2 and stems[0] == cfg.compare.reference
