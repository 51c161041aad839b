"""Step 2 of benchmarks/gpu_run.sh: img/s of stemlab's training step (fastai Learner + its callbacks) against a
plain PyTorch loop of the same model, batch, precision and memory format, in one process, torch.compile off and
on, and MFU = training FLOPs per image × img/s / the device's calibrated peak (profiler.calibrate).

    python benchmarks/gpu_speed.py --out DIR [--stems xresnet_3conv resnet_7x7] [--compile off on]
        [--batches 30] [--repeats 2] [--budget-s 150] [HYDRA OVERRIDES: trunk=xresnet50 data=… train.bs=256 …]

The loops are benchmarks/train_loop.py's, alternating per pair; each measurement is preceded by an untimed one
(compilation, cuDNN autotuning, the allocator). A batch that runs out of GPU memory is halved until one fits,
and the table says so in one sentence. On CUDA one stemlab epoch also runs under
torch.cuda.set_sync_debug_mode: the host synchronisations it makes are counted by call site.
Writes DIR/speed.csv (one row per stem × compile, rewritten after each) and DIR/speed.md."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from train_loop import plain_img_s, stemlab_img_s  # noqa: E402

from experiments.config import compose  # noqa: E402
from experiments.setup import profile_run, set_up  # noqa: E402
from profiler.calibrate import device_name, peaks  # noqa: E402
from profiler.runtime import AUTOCAST_DTYPES  # noqa: E402
from stems.base import atomic_write  # noqa: E402


def restrict(loader, n: int) -> None:
    """The loader's first n items only (the training set shared, not copied)."""
    rows = loader.rows if loader.rows is not None else torch.arange(len(loader.images))
    loader.rows = rows[:n]


def pairs(model, data, cfg, hw, batches: int, repeats: int) -> tuple[float, float]:
    """Median stemlab and plain img/s over `repeats` alternating pairs, after one untimed pair."""
    stemlab_img_s(model, data, cfg, hw, batches)
    plain_img_s(model, data.train, batches, hw, cfg.train.lr, cfg.train.wd)
    a, b = [], []
    for _ in range(repeats):
        a.append(stemlab_img_s(model, data, cfg, hw, batches))
        b.append(plain_img_s(model, data.train, batches, hw, cfg.train.lr, cfg.train.wd))
    return statistics.median(a), statistics.median(b)


def largest_fit(measure, bs: int, device: str) -> tuple[int, tuple[float, float], str]:
    """measure(bs) at `bs`, halving the batch while `device` runs out of memory; the note says what was cut."""
    tried = bs
    while True:
        try:
            result = measure(tried)
            note = "" if tried == bs else (f"train.bs={bs} runs out of memory on {device}; "
                                           f"the largest batch that fits (halving) is {tried}.")
            return tried, result, note
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tried == 1:
                raise
            tried //= 2


def host_syncs(model, data, cfg, hw, batches: int) -> Counter:
    """Call sites (file:line) of the host synchronisations one stemlab epoch of `batches` training batches makes
    (validation and the epoch ends included)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stemlab_img_s(model, data, cfg, hw, batches)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))


def prepare(stem: str, overrides: list[str]) -> dict:
    """The stem's run setup (data, hardware, model), its training FLOPs per image and the device's peak."""
    cfg = compose([f"stem={stem}", *overrides, "logger=none", "profile.latency=false"])
    setup = set_up(cfg)
    _, per_image = profile_run(setup, cfg)
    restrict(setup.data.valid, min(setup.data.valid.n, setup.data.valid.bs))  # one batch: epochs are timed without it
    model = setup.model.to(setup.hw.device)
    if setup.hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return {"stem": stem, "cfg": cfg, "setup": setup, "model": model, "flops": per_image["flops_train_per_image"],
            "peak": peaks(setup.hw.device, AUTOCAST_DTYPES[setup.hw.precision]).flops_per_s}


def measure(prep: dict, mode: str, args) -> dict:
    """One row: stemlab and plain img/s, their ratio and MFU, with torch.compile `mode`."""
    cfg, data, hw = prep["cfg"], prep["setup"].data, prep["setup"].hw
    model = torch.compile(prep["model"]) if mode == "on" else prep["model"]

    def at(bs: int) -> tuple[float, float]:
        data.train.bs, data.valid.bs = bs, bs
        restrict(data.train, args.batches * bs)
        return pairs(model, data, cfg, hw, args.batches, args.repeats)

    bs, (stemlab, plain), note = largest_fit(at, cfg.train.bs, device_name(hw.device))
    syncs = host_syncs(model, data, cfg, hw, args.batches) if hw.device.type == "cuda" else None
    flops, peak = prep["flops"], prep["peak"]
    return {"stem": prep["stem"], "trunk": cfg.trunk.name, "image_size": data.image_size, "bs": bs,
            "device": device_name(hw.device), "precision": hw.precision, "channels_last": hw.channels_last,
            "compile": mode, "stemlab_img_s": stemlab, "plain_img_s": plain, "ratio": stemlab / plain,
            "gflops_train_per_image": flops / 1e9, "peak_tflops": peak / 1e12,
            "mfu_stemlab": flops * stemlab / peak, "mfu_plain": flops * plain / peak,
            "host_syncs_per_epoch": None if syncs is None else sum(syncs.values()),
            "sync_sites": "" if not syncs else ", ".join(f"{k} ×{v}" for k, v in syncs.most_common(5)), "note": note}


def write(out: Path, rows: list[dict], skipped: list[str], batches: int) -> None:
    table = pd.DataFrame(rows)
    atomic_write(out / "speed.csv", table.to_csv(index=False))
    lines = [f"# stemlab's training step vs plain PyTorch ({batches} batches a measurement; goal: ratio ≥ 1.0)", ""]
    if rows:
        shown = table[["stem", "trunk", "image_size", "bs", "precision", "channels_last", "compile", "stemlab_img_s",
                       "plain_img_s", "ratio", "gflops_train_per_image", "mfu_stemlab", "mfu_plain",
                       "host_syncs_per_epoch"]]
        lines += [f"device: {rows[0]['device']}, calibrated peak {rows[0]['peak_tflops']:.1f} TFLOP/s "
                  f"({rows[0]['precision']})", "", shown.to_markdown(index=False, floatfmt=".3g"), ""]
        lines += [f"- {r['stem']} compile {r['compile']}: {r['note']}" for r in rows if r["note"]]
        lines += [f"- {r['stem']} compile {r['compile']}: host syncs at {r['sync_sites']}" for r in rows if r["sync_sites"]]
    lines += [f"- not measured: {s}" for s in skipped]
    atomic_write(out / "speed.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stems", nargs="+", default=["xresnet_3conv", "resnet_7x7"])
    ap.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=150.0, help="no new measurement starts once this many seconds are spent")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0, rows, skipped, prepared = time.perf_counter(), [], [], {}
    for mode in args.compile:  # compile off for every stem first: a step cut short loses the compiled runs first
        for stem in args.stems:
            if time.perf_counter() - t0 > args.budget_s:
                skipped.append(f"{stem} with compile {mode} (the step's budget of {args.budget_s:g} s was spent)")
                continue
            if stem not in prepared:
                prepared[stem] = prepare(stem, args.overrides)
            rows.append(measure(prepared[stem], mode, args))
            write(args.out, rows, skipped, args.batches)
    write(args.out, rows, skipped, args.batches)
    for r in rows:
        print(f"{r['stem']} compile {r['compile']} bs {r['bs']}: stemlab {r['stemlab_img_s']:,.0f} img/s, plain "
              f"{r['plain_img_s']:,.0f} img/s, ratio {r['ratio']:.3f}, MFU {100 * r['mfu_stemlab']:.1f} %")


if __name__ == "__main__":
    main()
