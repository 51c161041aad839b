"""W&B tracking, checked on what a real offline run wrote (the transaction log `wandb sync` uploads)."""
from __future__ import annotations

import json
import logging
import math
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import wandb
from wandb.proto import wandb_internal_pb2

import experiments
from experiments.tracking import WandbLogger, stage_summary

ROOT = Path(__file__).resolve().parents[1]

LOGGER_CFG = {"name": "wandb", "mode": "offline", "project": "stemlab", "entity": None, "group": None,
              "job_type": "train", "tags": [], "init_timeout": 30}


def transaction_log(run_dir: Path, timeout: float = 60) -> dict[str, list]:
    """The records of a finished offline run's `run-*.wandb` file, by type. wandb 0.31 writes no config.yaml
    or wandb-summary.json offline, its Python reader of this file is gone, and `run.finish()` returns before
    the file is complete: read until the `exit` record is there."""
    deadline = time.monotonic() + timeout
    while "exit" not in (records := _read_records(next(run_dir.glob("run-*.wandb")))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return records


def _read_records(path: Path) -> dict[str, list]:
    """A LevelDB log: a 7-byte file header, then 32 KiB blocks of chunks (crc32 u32, length u16, kind u8:
    1 full, 2 first, 3 middle, 4 last) holding serialised `wandb.proto.wandb_internal_pb2.Record`s."""
    block, header = 32768, 7
    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records: dict[str, list] = {}
    pos, pending = header, b""
    while pos + header <= len(raw):
        if block - pos % block < header:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + header])
        pending += raw[pos + header:pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            kind_name = record.WhichOneof("record_type")
            records.setdefault(kind_name, []).append(getattr(record, kind_name))
    return records


def _items(updates) -> dict:
    return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}


def run_config(records) -> dict:
    config = _items(records["run"][0].config.update)
    for update in records.get("config", []):
        config.update(_items(update.update))
    return config


def run_summary(records) -> dict:
    summary: dict = {}
    for update in records.get("summary", []):
        summary.update(_items(update.update))
    return summary


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))  # not the machine's W&B settings
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    wandb.teardown()  # wandb reads the environment once per process setup: start from this test's environment
    yield
    wandb.teardown()


@pytest.mark.slow
def test_a_run_gives_wandb_what_ran_per_stage_scalars_and_epoch_curves(make_cfg, tmp_path, offline_env, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    cfg = make_cfg("logger=wandb", "profile.latency=true", "profile.batch_size=2", "train.precision=auto",
                   "train.channels_last=auto")
    experiments.run(cfg, tmp_path)
    run_dir, = (tmp_path / "wandb").glob("offline-run-*")
    assert f"W&B logs offline to {run_dir}; upload later with: wandb sync {run_dir}" in caplog.text
    records = transaction_log(run_dir)

    config = run_config(records)
    # `auto`: CUDA + bf16 + channels_last on a GPU; on the CPU what its probe chose (experiments.cpu_format)
    ran = json.loads((tmp_path / "result.json").read_text())["hardware"]
    assert {k: config["train"][k] for k in ("device", "precision", "channels_last")} == \
        {k: ran[k] for k in ("device", "precision", "channels_last")}
    assert (ran["device"], ran["precision"], ran["channels_last"]) == ("cuda", "bf16", True) if torch.cuda.is_available() \
        else ran["device"] == "cpu" and ran["precision"] in ("fp32", "bf16")
    assert {k: config["data"][k] for k in ("n_train", "n_valid", "image_size", "in_channels", "num_classes")} == \
        {"n_train": 32, "n_valid": 16, "image_size": 16, "in_channels": 3, "num_classes": 10}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert config["code"] == {"git_commit": head or None, "stemlab": version}

    # per-stage scalars: each group's share of the layers' forward FLOPs and time, summed here from layers.csv
    layers = pd.read_csv(tmp_path / "layers.csv")
    summary = run_summary(records)
    for group in ("stem", "stage1", "stage2", "stage3", "stage4", "head"):
        rows = layers[layers["group"] == group]
        assert summary[f"depth/{group}/share_flops"] == pytest.approx(rows["flops_fwd"].sum() / layers["flops_fwd"].sum())
        assert summary[f"depth/{group}/share_time"] == pytest.approx(rows["ms_fwd"].sum() / layers["ms_fwd"].sum())
        assert summary[f"depth/{group}/ms_bwd"] == pytest.approx(rows["ms_bwd"].sum())
    assert summary["layers"]["_type"] == "table-file" and summary["shares"]["_type"] == "image-file"

    # the history holds one row per epoch, each charted against `epoch`; tables and images are not in it
    metrics = {m.glob_name or m.name: m.step_metric for m in records["metric"]}
    assert metrics == {"epoch": "", "*": "epoch"}
    history = [_items(h.item) for h in records["history"]]
    assert [h["epoch"] for h in history] == [1]
    assert all(set(h) - {"_step", "_runtime", "_timestamp"} <= {"epoch", "train_loss", "valid_loss", "accuracy",
                                                                "train_img_s"} for h in history)


def test_stage_summary_keeps_measured_values_only():
    groups = pd.DataFrame({"group": ["stem", "stage1", "total"], "share_flops": [0.25, 0.75, 1.0],
                           "share_time": [math.nan, math.nan, math.nan], "ms_fwd": [2.0, 6.0, 8.0],
                           "ms_bwd": [math.nan, 1.5, math.nan]})
    assert stage_summary(groups) == {"depth/stem/share_flops": 0.25, "depth/stage1/share_flops": 0.75,
                                     "depth/stem/ms_fwd": 2.0, "depth/stage1/ms_fwd": 6.0, "depth/stage1/ms_bwd": 1.5}


def test_saved_weights_become_a_model_artifact_by_reference(tmp_path, offline_env, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))  # W&B's staging folder lives under it
    torch.save({"w": torch.zeros(3)}, tmp_path / "model.pt")
    logger = WandbLogger(LOGGER_CFG, {"seed": 0}, "xresnet_3conv-xresnet18-synthetic-s0", [], tmp_path)
    groups = pd.DataFrame({"group": ["stem", "total"], "share_flops": [1.0, 1.0]})
    logger.finish({"valid_acc": 0.5}, groups, None, None)
    run_dir, = (tmp_path / "wandb").glob("offline-run-*")
    artifact, = transaction_log(run_dir)["artifact"]
    assert (artifact.type, artifact.name) == ("model", "model-xresnet_3conv-xresnet18-synthetic-s0")
    assert [e.path for e in artifact.manifest.contents] == ["model.pt"] and set(artifact.aliases) == {"final", "latest"}
    # a reference to the run folder's file, not a copy of the weights in W&B's staging folder
    assert [e.ref for e in artifact.manifest.contents] == [(tmp_path / "model.pt").resolve().as_uri()]
    staged = tmp_path / "data" / "artifacts" / "staging"
    assert not staged.exists() or not any(staged.iterdir())


@pytest.fixture
def stalled_server():
    """A local W&B address that accepts connections and never answers: a network stall, offline."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # the server was closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


def test_a_stalled_network_falls_back_to_an_offline_run_that_can_be_synced(tmp_path, offline_env, monkeypatch,
                                                                            stalled_server, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", stalled_server)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key is set, as on a machine that ran `wandb login`
    t0 = time.perf_counter()
    logger = WandbLogger({**LOGGER_CFG, "mode": "online", "init_timeout": 2}, {"seed": 0}, "stalled", [], tmp_path)
    took = time.perf_counter() - t0
    run_dir, = (tmp_path / "wandb").glob("offline-run-*")
    assert took < 20, f"the online attempt should give up after init_timeout=2 s, took {took:.0f} s"
    assert (f"W&B could not start (CommError: Timed out initializing run: POST {stalled_server}/graphql"
            in caplog.text) and f"logging offline to {run_dir}; upload later with: wandb sync {run_dir}" in caplog.text
    logger.run.log({"epoch": 1, "accuracy": 0.5})
    logger.finish({"valid_acc": 0.5}, pd.DataFrame({"group": ["total"]}), None, None)
    records = transaction_log(run_dir)
    assert [_items(h.item)["accuracy"] for h in records["history"]] == [0.5] and "exit" in records


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(make_cfg, tmp_path, offline_env):
    cfg = make_cfg("logger=wandb", "train.epochs=2", "train.keep_checkpoints=true")
    experiments.run(cfg, tmp_path)
    first, = (tmp_path / "wandb").glob("offline-run-*")
    # "interrupted after epoch 1": only the first epoch's checkpoint is left; the same command resumes it
    (tmp_path / "checkpoints" / "epoch_2.pt").unlink()
    (tmp_path / "result.json").unlink()
    experiments.run(cfg, tmp_path)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in runs} == {first.name.rsplit("-", 1)[1]}
    resumed = next(p for p in runs if p != first)
    assert [_items(h.item)["epoch"] for h in transaction_log(resumed)["history"]] == [2]
