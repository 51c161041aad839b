"""Throughput of stemlab's training loop (fastai Learner + its callbacks) against a plain PyTorch loop
over the same model, batches, optimiser and precision, in one process. Prints the ratio (goal ≥ 0.95).

    python benchmarks/train_loop.py [--stem xresnet_3conv] [--trunk xresnet18] [--data mnist5k] [--bs 64]
                                    [--batches 30] [--repeats 3]

The two loops alternate (A B A B ...) so that load from other processes hits both alike; the figure is
the median of the per-pair ratios."""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.allocator import keep_freed_memory  # noqa: E402
from experiments.config import CONF_DIR, register_configs  # noqa: E402
from experiments.data import build_data  # noqa: E402
from experiments.fit import make_learner, resolve_device  # noqa: E402
from experiments.model import build_model  # noqa: E402
from experiments.setup import hardware_for  # noqa: E402


def plain_img_s(model, loader, n_batches: int, hw, lr: float, wd: float) -> float:
    """The textbook loop: forward, cross-entropy, backward, AdamW step (autocast as the Learner would)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, fused=hw.device.type == "cuda")
    model.train()
    seen, batches = 0, iter(loader)
    sync = torch.cuda.synchronize if hw.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        x, y = next(batches)
        with torch.autocast(hw.device.type, dtype=torch.bfloat16, enabled=hw.precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(y)
    sync()
    return seen / (time.perf_counter() - t0)


def stemlab_img_s(model, data, cfg, hw, n_batches: int) -> float:
    """One fastai epoch of n_batches (validation excluded: the Throughput callback times the train phase)."""
    learn = make_learner(model, data, {**cfg.train, "epochs": 1}, hw)
    learn.fit(1, lr=cfg.train.lr)
    return learn.throughput.img_s[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stem", default="xresnet_3conv")
    ap.add_argument("--trunk", default="xresnet18")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"stem={args.stem}", f"trunk={args.trunk}", f"data={args.data}",
                                           f"train.bs={args.bs}", "logger=none"])
    device = resolve_device(cfg.train)
    keep_freed_memory(device.type)  # as a run's process does (experiments/allocator.py)
    data = build_data(cfg.data, bs=cfg.train.bs, seed=0, device=device)
    hw = hardware_for(cfg, data, device)
    # Both loops see the same number of batches: cut the training set to n_batches * bs images
    n = args.batches * args.bs
    data.train.images, data.train.labels = data.train.images[:n], data.train.labels[:n]
    model = build_model(cfg.stem, cfg.trunk, data.in_channels, data.num_classes).to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)

    plain_img_s(copy.deepcopy(model), data.train, 3, hw, cfg.train.lr, cfg.train.wd)  # warm-up (allocator, kernels)
    ratios = []
    for r in range(args.repeats):
        a = stemlab_img_s(copy.deepcopy(model), data, cfg, hw, args.batches)
        b = plain_img_s(copy.deepcopy(model), data.train, args.batches, hw, cfg.train.lr, cfg.train.wd)
        ratios.append(a / b)
        print(f"pair {r}: stemlab {a:,.0f} img/s, plain PyTorch {b:,.0f} img/s, ratio {a / b:.3f}")
    print(f"{args.stem} + {args.trunk} on {args.data}, bs {args.bs}, {hw.device} {hw.precision}: "
          f"stemlab / plain PyTorch throughput = {statistics.median(ratios):.3f} (median of {args.repeats} pairs; goal ≥ 0.95)")


if __name__ == "__main__":
    main()
