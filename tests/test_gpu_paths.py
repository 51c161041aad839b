"""The paths that run only on a CUDA GPU, each once at a toy size: bf16 autocast and channels_last chosen by `auto`,
fused AdamW, kernel-time attribution in the cost profile, the data cache preloaded into GPU memory, the batched
crops on the device and stem.match=time: timed on CUDA. benchmarks/gpu_run.sh runs them on the GPU machine
(`pytest -m gpu tests/test_gpu_paths.py`); without a CUDA GPU each is skipped with that reason."""
from __future__ import annotations

import json
import math

import pytest
import torch
from fastai.callback.channelslast import ChannelsLast
from torch import nn

import experiments
from experiments.data import build_data
from experiments.data.augment import RandomResizedCropFlip
from experiments.fit import AutocastOnDevice, make_learner
from experiments.match import TOLERANCE
from experiments.model import resolve_stem
from experiments.setup import set_up
from profiler import profile_model
from tests.test_data import imagenette_cfg, two_class_folder

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_run.sh runs these on one)")]

AUTO = ["train.device=cuda", "train.precision=auto", "train.channels_last=auto"]


def test_auto_trains_in_bf16_channels_last_with_fused_adamw(make_cfg):
    setup = set_up(make_cfg(*AUTO))
    assert (setup.hw.device.type, setup.hw.precision, setup.hw.channels_last) == ("cuda", "bf16", True)
    learn = make_learner(setup.model, setup.data, make_cfg(*AUTO).train, setup.hw)
    assert {AutocastOnDevice, ChannelsLast} <= {type(cb) for cb in learn.cbs}
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    dtypes = []
    conv.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    with learn.no_logging():
        learn.fit(1, lr=1e-3)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast on the GPU, training and validation
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert learn.opt.opt.defaults["fused"] is True and isinstance(learn.opt.opt, torch.optim.AdamW)
    assert all(math.isfinite(v) for v in learn.recorder.values[-1])


def test_a_cuda_run_records_what_it_trained_in(make_cfg, tmp_path):
    experiments.run(make_cfg(*AUTO, "profile.latency=true", "profile.budget_s=1"), tmp_path)
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "completed"
    assert {k: record["hardware"][k] for k in ("device", "precision", "channels_last")} == \
        {"device": "cuda", "precision": "bf16", "channels_last": True}
    assert record["metrics"]["ms_train_step"] > 0 and record["metrics"]["train_img_s"] > 0


def test_layer_time_is_the_device_time_of_the_kernels_each_layer_launched():
    # nn.Flatten of a contiguous map is a view: it launches no kernel, so kernel-time attribution gives it exactly 0
    # (the CPU's wall-time attribution would give it the host time its hooks take)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32 * 32, 10))
    profile = profile_model(model, (8, 3, 32, 32), device="cuda", latency=True, backward=True, budget_s=1)
    rows = profile.layers.set_index("kind")
    assert rows.loc["Flatten", "ms_fwd"] == 0
    for kind in ("Conv2d", "ReLU", "Linear"):
        assert rows.loc[kind, "ms_fwd"] > 0
    for kind in ("Conv2d", "Linear"):
        assert rows.loc[kind, "ms_bwd"] > 0  # their weight gradients are kernels too
    assert profile.totals["ms_fwd_e2e"] > 0 and math.isfinite(profile.totals["gap_fwd"])


def test_the_cache_is_preloaded_into_gpu_memory_without_changing_a_batch(tmp_path):
    root = two_class_folder(tmp_path / "imagenette", 40)

    def bundle(preload):
        return build_data(imagenette_cfg(root, tmp_path / "cache", image_size=32, preload=preload), bs=2, seed=0,
                          device="cuda")

    on_gpu, on_host = bundle("auto"), bundle(False)
    assert on_gpu.train.images.device.type == "cuda" and on_host.train.images.device.type == "cpu"
    (x_gpu, y_gpu), (x_host, y_host) = next(iter(on_gpu.train)), next(iter(on_host.train))
    assert x_gpu.device.type == "cuda" and x_host.device.type == "cuda"  # batches land on the device either way
    assert torch.equal(y_gpu, y_host) and torch.equal(x_gpu, x_host)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_batched_crops_on_the_device_resample_exactly(flip):
    # a crop of the whole image at its own size is the identity (bilinear sampling at the pixel centres), flipped
    # when the flip is drawn: an exact answer for the GPU's affine resampling
    x = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, device="cuda")
    crop = RandomResizedCropFlip(24, min_scale=1.0, ratio=(1.0, 1.0), flip_p=flip)
    out = crop(x, torch.Generator().manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (4, 3, 24, 24)
    expected = x.float().flip(-1) if flip else x.float()
    assert torch.allclose(out, expected, atol=1e-2)  # float rounding of the grid, far below one grey level


def test_a_time_match_is_timed_on_the_gpu(make_cfg):
    cfg = make_cfg("stem=xresnet_3conv", "stem.match=time:resnet_7x7")
    stem, match = resolve_stem(cfg.stem, 3, 128, "cuda", batch_size=64, precision="bf16", channels_last=True)
    assert match["device"].startswith("cuda") and match["target_kind"] == "time"
    assert (match["precision"], match["channels_last"], match["batch_size"]) == ("bf16", True, 64)
    assert abs(match["achieved_value"] / match["target_value"] - 1) <= TOLERANCE
    assert stem["widths"] == match["widths"] and stem["match"] is None
