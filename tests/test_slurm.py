"""Sweeps through `hydra/launcher=slurm` on a real one-node SLURM cluster (`cluster/start.sh`, root): points run as
an array job, a requeued point resumes from its checkpoint, a point killed from outside stays a local failure.

Marked `slurm`; skipped, with the reason, when no cluster answers (`sinfo` and `sacct` must work)."""
import json
import shutil
import subprocess
import time

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, TINY, run_cli


def cluster_problem() -> str | None:
    if not shutil.which("sbatch"):
        return "no SLURM client on this machine (start a one-node cluster with `sudo cluster/start.sh`)"
    for command in (["sinfo", "-h"], ["sacct", "-n", "-X"]):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` timed out: no SLURM cluster answers (start one with `sudo cluster/start.sh`)"
        if proc.returncode:
            return f"`{' '.join(command)}` failed ({proc.stderr.strip()[:200]}): start a cluster with `sudo cluster/start.sh`"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(cluster_problem() is not None, reason=str(cluster_problem()))]

# the preset's GPU-sized request shrunk to this machine; timeout_min above 10 (see conf/hydra/launcher/slurm.yaml)
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_task=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20"]
POINTS = [*TINY, "+experiment=stem_study_mnist5k", "seed=0"]


def records(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


def start_sweep(sweep, *overrides) -> subprocess.Popen:
    return subprocess.Popen(["python", str(ROOT / "train.py"), "-m", *POINTS, *SLURM, *overrides,
                             f"hydra.sweep.dir={sweep}"], cwd=sweep.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_point_sweep_through_the_slurm_launcher(tmp_path):
    sweep = tmp_path / "study"
    proc = run_cli("-m", *POINTS, *SLURM, "stem=resnet_7x7,patchify_4x4", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                   timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    recs = records(sweep).values()
    assert sorted(r["config"]["stem"]["name"] for r in recs) == ["patchify_4x4", "resnet_7x7"]
    assert {r["status"] for r in recs} == {"completed"}
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as SLURM array tasks


def job_id(point_dir, timeout=300) -> str:
    """A point's SLURM job (array task) id, once its first epoch's checkpoint is written: it is training."""
    deadline = time.monotonic() + timeout
    while not list((point_dir / "checkpoints").glob("epoch_*.pt")):
        assert time.monotonic() < deadline, f"no checkpoint in {point_dir} after {timeout} s"
        time.sleep(0.1)
    return str(OmegaConf.load(point_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def test_requeued_point_resumes_and_a_cancelled_point_stays_local(tmp_path):
    sweep = tmp_path / "study"
    args = ["-m", *POINTS, *SLURM, "stem=resnet_7x7,patchify_4x4", "train.epochs=3", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(["python", str(ROOT / "train.py"), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while len(points := sorted(p for p in sweep.glob("*stem=*") if (p / ".hydra" / "hydra.yaml").exists())) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the two points did not start"
        time.sleep(0.2)
    requeued, cancelled = points
    subprocess.run(["scontrol", "requeue", job_id(requeued)], check=True)  # what preemption with REQUEUE does
    subprocess.run(["scancel", job_id(cancelled)], check=True)  # killed from outside
    out, _ = proc.communicate(timeout=600)

    assert proc.returncode == 0, out[-3000:]  # the cancelled point did not end the sweep
    rec = records(sweep)
    assert rec[requeued.name]["status"] == "completed" and rec[requeued.name]["resumed_from_epoch"] >= 1
    assert len(rec[requeued.name]["resumed_epochs"]) == rec[requeued.name]["resumed_from_epoch"]
    assert rec[cancelled.name]["status"] == "interrupted"  # SIGTERM from scancel: its checkpoint stays
    assert "ended without a result" in out

    # re-running the sweep resumes the cancelled point and skips the completed one (its record stays as it was)
    completed_at = (requeued / "result.json").stat().st_mtime_ns
    again = run_cli(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    rec = records(sweep)
    assert rec[cancelled.name]["status"] == "completed" and rec[cancelled.name]["resumed_from_epoch"] >= 1
    assert (requeued / "result.json").stat().st_mtime_ns == completed_at
