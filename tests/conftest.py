"""Shared fixtures: Hydra configs composed the way train.py composes them, shrunk for a 2-core CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from experiments.config import CONF_DIR, register_configs

ROOT = Path(__file__).resolve().parents[1]
# profile.latency=false: these runs test the loop, the records and the sweeps; per-layer timing, on by default in
# every run, is tested where it is the subject (test_train's first test, test_profile, test_wandb)
# train.precision/channels_last pinned: `auto` probes the CPU (experiments.cpu_format, tested in test_cpu_format) and
# would make the other tests' arithmetic depend on the CPU they run on
TINY = ["data=synthetic", "data.n_train=32", "data.n_valid=16", "data.image_size=16", "train.bs=8",
        "train.epochs=1", "logger=none", "profile.latency=false", "train.precision=fp32", "train.channels_last=false"]


def pytest_collection_modifyitems(config, items):
    """`cuda` tests check the refusals of a machine without a CUDA GPU: on one with a GPU there is nothing to refuse."""
    import torch

    if torch.cuda.is_available():
        for item in items:
            if item.get_closest_marker("cuda"):
                item.add_marker(pytest.mark.skip(reason="checks a machine without a CUDA GPU; this one has one"))


@pytest.fixture
def make_cfg():
    """make_cfg(*overrides) -> the composed DictConfig (tiny synthetic run unless overridden)."""
    register_configs()

    def make(*overrides: str, tiny: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*(TINY if tiny else []), *overrides])

    yield make
    GlobalHydra.instance().clear()


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python train.py ARGS` (or another script as first arg) in a subprocess, W&B offline."""
    script = args[0] if args and args[0].endswith(".py") else str(ROOT / "train.py")
    rest = args[1:] if args and args[0].endswith(".py") else args
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, script, *rest], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
