"""Training throughput of the default format choice (`train.precision=auto train.channels_last=auto`) against
`train.precision=fp32 train.channels_last=false`, in one process, on the run's own model, data and Learner.
Prints the CPU, what auto chose (and how), one training step of the model in each of the four formats (timed fresh,
interleaved, as the probe does: ratios to fp32 contiguous), and the training ratio auto / fp32 (goal: >= 1.3 on a CPU
with AMX, >= 0.97 on one without native bf16).

    python benchmarks/cpu_precision.py [--batches 20] [--repeats 5] [OVERRIDES ...]
    python benchmarks/cpu_precision.py data=imagenette data.root=DIR data.image_size=64   # the Imagenette CPU study
    python benchmarks/cpu_precision.py --as-without-native-bf16   # auto as on a CPU without native bf16 (fp32 layouts)

The two formats alternate (A B, B A, ...) so that load from other processes hits both alike; the figure is the
median of the per-pair ratios. The first `auto` resolution may run the format probe (cached afterwards)."""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.allocator import keep_freed_memory  # noqa: E402
from experiments.config import compose  # noqa: E402
from experiments.cpu_format import candidates, capabilities, probe, resolve_cpu_format  # noqa: E402
from experiments.data import build_data  # noqa: E402
from experiments.fit import Hardware, resolve_device  # noqa: E402
from experiments.model import build_model  # noqa: E402
from experiments.setup import hardware_for  # noqa: E402
from train_loop import stemlab_img_s  # noqa: E402  (one fastai epoch of n batches, validation excluded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--as-without-native-bf16", action="store_true",
                    help="let auto choose as on a CPU without native bf16 (among fp32 layouts): the >= 0.97 goal, checked on any CPU")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides as for train.py (the default run without any)")
    args = ap.parse_args()

    cfg = compose(["logger=none", *args.overrides, "train.precision=auto", "train.channels_last=auto"])
    device = resolve_device(cfg.train)
    keep_freed_memory(device.type)  # as a run's process does (experiments/allocator.py)
    data = build_data(cfg.data, bs=cfg.train.bs, seed=0, device=device)
    n = args.batches * cfg.train.bs  # both formats see the same batches: the training set cut to n images
    data.train.images, data.train.labels = data.train.images[:n], data.train.labels[:n]
    fp32 = Hardware(device, "fp32", False)
    model = build_model(cfg.stem, cfg.trunk, data.in_channels, data.num_classes, image_size=data.image_size)
    shape = (cfg.train.bs, data.in_channels, data.image_size, data.image_size)
    if args.as_without_native_bf16:
        caps = {**capabilities(), "native_bf16": False}
        chosen, decided = resolve_cpu_format("auto", "auto", lambda: (copy.deepcopy(model), shape), caps)
        auto = Hardware(device, chosen.precision, chosen.channels_last, decided)
    else:
        auto = hardware_for(cfg, data, device)
    print(f"CPU {auto.decided.get('cpu_model')}: avx512_bf16 {auto.decided.get('avx512_bf16')}, amx_bf16 "
          f"{auto.decided.get('amx_bf16')}; {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")
    print(f"auto chose {auto.precision}, channels_last {auto.channels_last} ({auto.decided.get('how')}; probe ms "
          f"{auto.decided.get('probe_ms')})")

    step_ms = probe(model, shape, candidates("auto", "auto", native_bf16=True), rounds=args.repeats)
    base = next(iter(step_ms.values()))
    print("one training step (forward + backward), median of interleaved rounds: " + ", ".join(
        f"{f.label} {ms:.1f} ms ({base / ms:.2f}x)" for f, ms in step_ms.items()))

    def img_s(hw: Hardware) -> float:
        return stemlab_img_s(copy.deepcopy(model), data, cfg, hw, args.batches)

    img_s(fp32), img_s(auto)  # warm-up: kernels of both formats
    ratios = []
    for r in range(args.repeats):
        formats = {"auto": auto, "fp32": fp32}
        speed = {name: img_s(formats[name]) for name in (("auto", "fp32") if r % 2 == 0 else ("fp32", "auto"))}
        a, b = speed["auto"], speed["fp32"]
        ratios.append(a / b)
        print(f"pair {r}: auto {a:,.0f} img/s, fp32 {b:,.0f} img/s, ratio {a / b:.3f}")
    same = (auto.precision, auto.channels_last) == (fp32.precision, fp32.channels_last)
    print(f"{cfg.stem.name} + {cfg.trunk.name} on {cfg.data.name} at {data.image_size} px, bs {cfg.train.bs}: "
          f"auto / fp32 training throughput = {statistics.median(ratios):.3f} (median of {args.repeats} pairs; "
          f"load {os.getloadavg()[0]:.2f})" + ("; auto chose fp32 contiguous itself, so it trains exactly as the "
                                               "baseline: the pairs show this benchmark's noise, not a difference" if same else ""))


if __name__ == "__main__":
    main()
