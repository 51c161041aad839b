"""`train.precision` / `train.channels_last` = auto on the CPU: the candidates a CPU's capability allows, the choice from
probed step times (injected: no test assumes the CPU it runs on), the cache, bf16 on any CPU when asked, autocast
really on in a CPU Learner, MFU by hand, the record's CPU, and bf16's accuracy against fp32's."""
from __future__ import annotations

import json
import logging
import math
import re
import statistics

import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from torch import nn

import experiments
import experiments.cpu_format as cpu_format
from profiler.calibrate import Peaks
from experiments.cpu_format import Format, candidates, capabilities, choose, probe, resolve_cpu_format
from experiments.data import build_data
from experiments.fit import make_learner, resolve_hardware
from experiments.model import build_model
from experiments.record import environment
from experiments.runner import summarize

AMX = {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"}  # flags of a Xeon with AMX
AVX512_BF16 = {"avx512_bf16", "avx512f", "avx512_vnni"}  # an AMD EPYC (Zen 4) without AMX
NO_BF16 = {"avx2", "fma"}  # a CPU that would emulate bf16

FP32, FP32_CL, BF16, BF16_CL = Format("fp32", False), Format("fp32", True), Format("bf16", False), Format("bf16", True)


def tiny_workload():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))
    return model, (4, 3, 8, 8)


@pytest.mark.parametrize("flags,native", [(AMX, True), (AVX512_BF16, True), (NO_BF16, False), (set(), False)])
def test_capability_reads_native_bf16_from_the_flags(flags, native):
    caps = capabilities(flags)
    assert caps["native_bf16"] is native and caps["amx_bf16"] is ("amx_bf16" in flags)
    assert caps["avx512_bf16"] is ("avx512_bf16" in flags) and caps["cpu_model"]


def test_candidates_try_bf16_only_where_it_is_native_and_keep_explicit_settings():
    assert candidates("auto", "auto", True) == [FP32, FP32_CL, BF16, BF16_CL]
    assert candidates("auto", "auto", False) == [FP32, FP32_CL]
    assert candidates("auto", False, True) == [FP32, BF16]
    assert candidates("bf16", "auto", False) == [BF16, BF16_CL]  # asked for: tried even where it is emulated
    assert candidates("fp32", True, True) == [FP32_CL]


@pytest.mark.parametrize("times,chosen", [
    ({FP32: 100.0, FP32_CL: 90.0, BF16: 70.0, BF16_CL: 60.0}, BF16_CL),  # an AMX Xeon: bf16 + channels_last
    ({FP32: 100.0, FP32_CL: 98.0, BF16: 140.0, BF16_CL: 150.0}, FP32),  # 2 % is within the margin: the baseline stays
    ({FP32: 100.0, FP32_CL: 80.0, BF16: 120.0, BF16_CL: 90.0}, FP32_CL),
    ({BF16: 50.0, BF16_CL: 60.0}, BF16),  # the baseline is the first format, whatever its precision
])
def test_choice_is_the_fastest_when_it_beats_the_baseline_clearly(times, chosen):
    assert choose(times) == chosen


def test_auto_probes_once_per_machine_and_workload(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    probed: list[list[Format]] = []

    def fake_probe(model, shape, formats):
        probed.append(formats)
        return {FP32: 100.0, FP32_CL: 95.0, BF16: 62.0, BF16_CL: 60.0}

    monkeypatch.setattr(cpu_format, "probe", fake_probe)
    chosen, decided = resolve_cpu_format("auto", "auto", tiny_workload, capabilities(AVX512_BF16))
    assert chosen == BF16_CL and decided["how"] == "probe" and decided["speedup"] == pytest.approx(100 / 60)
    assert decided["probe_ms"] == {"fp32": 100.0, "fp32, channels_last": 95.0, "bf16": 62.0, "bf16, channels_last": 60.0}
    assert decided["probe_load"] >= 0  # the load while probing: a busy machine's choice is recorded as such
    assert resolve_cpu_format("auto", "auto", tiny_workload, capabilities(AVX512_BF16))[0] == BF16_CL
    assert probed == [[FP32, FP32_CL, BF16, BF16_CL]]  # the second run read the cache
    assert len(json.loads((tmp_path / "cpu_formats.json").read_text())) == 1


def test_no_native_bf16_never_probes_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    probed = []
    monkeypatch.setattr(cpu_format, "probe", lambda model, shape, formats: probed.append(formats) or {FP32: 10.0, FP32_CL: 11.0})
    chosen, decided = resolve_cpu_format("auto", "auto", tiny_workload, capabilities(NO_BF16))
    assert chosen == FP32 and probed == [[FP32, FP32_CL]]
    built = []
    chosen, decided = resolve_cpu_format("auto", False, lambda: built.append(1), capabilities(NO_BF16))
    assert chosen == FP32 and decided["how"] == "capability" and built == []  # nothing to choose: no model, no probe


def test_bf16_can_be_asked_for_on_any_cpu(monkeypatch):
    monkeypatch.setattr(cpu_format, "capabilities", lambda: capabilities(NO_BF16))
    hw = resolve_hardware({"precision": "bf16", "channels_last": False}, torch.device("cpu"), tiny_workload)
    assert (hw.precision, hw.channels_last, hw.decided["how"], hw.decided["native_bf16"]) == ("bf16", False, "setting", False)


def test_the_choice_is_logged_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STEMLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_format, "capabilities", lambda: capabilities(AMX))
    monkeypatch.setattr(cpu_format, "probe", lambda model, shape, formats: {FP32: 100.0, FP32_CL: 95.0, BF16: 70.0, BF16_CL: 62.5})
    caplog.set_level(logging.INFO, logger="stemlab")
    hw = resolve_hardware({"precision": "auto", "channels_last": "auto"}, torch.device("cpu"), tiny_workload)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training on the CPU")]
    assert (hw.precision, hw.channels_last) == ("bf16", True)
    assert lines == [f"Training on the CPU ({capabilities()['cpu_model']}, AMX bf16) in bf16, channels_last "
                     "(probed: 1.60x the speed of fp32)."]


def test_a_real_probe_times_every_format_and_says_so_first(caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    times = probe(*tiny_workload(), [FP32, FP32_CL, BF16, BF16_CL], rounds=2)
    assert list(times) == [FP32, FP32_CL, BF16, BF16_CL] and all(t > 0 and math.isfinite(t) for t in times.values())
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[0].startswith("Probing which CPU format trains this model fastest (fp32 / fp32, "
                                                 "channels_last / bf16 / bf16, channels_last: 3 training steps of each")
    assert re.fullmatch(r"CPU format probe: a first step took [0-9.]+ s \(it builds the kernels: the slowest\), so at "
                        r"most about [0-9]+ s in all\.", said[1])


class PredDtype(Callback):
    order = 5  # after the autocast starts (before_batch, order 10 is after it: fastai runs callbacks by order)

    def after_pred(self):
        self.dtypes.append(self.pred.dtype)


@pytest.mark.slow
def test_a_cpu_learner_in_bf16_computes_in_bf16(make_cfg):
    cfg = make_cfg("train.precision=bf16", "data.num_classes=4")
    data = build_data(cfg.data, bs=cfg.train.bs, seed=0)
    hw = resolve_hardware(cfg.train, torch.device("cpu"), lambda: None)
    model = build_model(cfg.stem, cfg.trunk, data.in_channels, data.num_classes, image_size=data.image_size)
    seen = PredDtype()
    seen.dtypes = []
    learn = make_learner(model, data, cfg.train, hw, [seen])
    learn.fit(1, lr=1e-3)
    assert set(seen.dtypes) == {torch.bfloat16}  # fastai's own MixedPrecision would have left the CPU in fp32


def test_mfu_is_training_flops_per_second_over_the_peak(caplog):
    history = pd.DataFrame([{"epoch": 0, "train_loss": 1.0, "valid_loss": 1.0, "accuracy": 0.5, "train_img_s": 250.0}])

    class Profile:
        totals = {"params": 10, "stem_share_flops": 0.1, "stem_share_time": 0.2, "ms_fwd": 1.0, "ms_train_step_e2e": 3.0}

    per_image = {"flops_fwd_per_image": 1e9, "flops_train_per_image": 3e9}
    metrics = summarize(history, Profile(), per_image, Peaks("cpu", "torch.bfloat16", 2.5e12, 1e11))
    assert metrics["mfu"] == pytest.approx(0.3)  # 3 GFLOP x 250 img/s = 750 GFLOP/s of 2,500
    # a peak below what the training reached was measured too low: no MFU rather than one above 100 %
    slow_peak = Peaks("cpu", "torch.bfloat16", 5e11, 1e11, {"load_avg": 17.8, "cpus": 2})
    with caplog.at_level(logging.WARNING, logger="stemlab"):
        assert summarize(history, Profile(), per_image, slow_peak)["mfu"] is None
    assert caplog.messages == ["Training reached 750.0 GFLOP/s, above this device's peak of 500.0 GFLOP/s (measured at "
                               "load 17.8 on 2 cores): that peak is too low, so the record has no MFU."]


def test_the_record_names_the_cpu_and_its_bf16():
    env = environment()
    flags = cpu_format.cpu_flags()
    assert env["cpu"] == cpu_format.cpu_model() and env["cpu_arch"]
    assert (env["cpu_avx512_bf16"], env["cpu_amx_bf16"]) == ("avx512_bf16" in flags, "amx_bf16" in flags)


@pytest.mark.slow
def test_bf16_reaches_fp32s_accuracy(make_cfg, tmp_path):
    """Accuracy parity, small: 2 seeds each of a learnable task; bf16's mean accuracy within the seeds' spread
    (or 5 points) of fp32's, and both far above chance (1/6)."""
    acc = {}
    for precision in ("fp32", "bf16"):
        acc[precision] = [experiments.run(make_cfg(f"train.precision={precision}", f"seed={seed}", "data.num_classes=6",
                                                   "data.n_train=256", "data.n_valid=64", "train.bs=32",
                                                   "train.epochs=3", "trunk.layers=[1,1,1,1]", "stem=patchify_4x4",
                                                   "trunk.widths=[16,32,32,64]"),
                                          tmp_path / f"{precision}{seed}") for seed in (0, 1)]
    spread = max(max(a) - min(a) for a in acc.values())
    assert min(min(a) for a in acc.values()) > 0.4, acc
    assert abs(statistics.mean(acc["bf16"]) - statistics.mean(acc["fp32"])) <= max(spread, 0.05), acc


def test_a_runs_record_carries_mfu_the_cpu_and_its_wall_time_by_part(make_cfg, tmp_path):
    experiments.run(make_cfg("train.epochs=2"), tmp_path)
    record = json.loads((tmp_path / "result.json").read_text())
    assert 0 < record["metrics"]["mfu"] < 1 and record["hardware"]["peak_flops_per_s"] > 0
    assert record["hardware"]["decided"]["how"] == "setting"  # TINY pins fp32, contiguous
    assert record["environment"]["cpu"] == cpu_format.cpu_model()
    parts = record["wall_parts_s"]
    assert set(parts) == {"data", "format_probe", "stem_match", "profile", "train_load", "train_compute", "evaluate",
                          "checkpoint", "other"}
    assert all(v >= 0 for v in parts.values()) and sum(parts.values()) == pytest.approx(record["wall_s"])
    assert parts["checkpoint"] == pytest.approx(sum(record["checkpoint_s"])) and len(record["checkpoint_s"]) == 2
